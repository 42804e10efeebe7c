"""``cvt info``: one block per good file, one stderr line per bad one, exit 1 if any was bad."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cvt.cli import main
from tests.core.test_rawfile import make_guider, make_raw


def test_good_and_bad_files(tmp_path, capsys):
    good = tmp_path / "MC_O_20250415_000060_R22_S11.fits"
    make_raw(good, vendor="E2V", detector=("R22", "S11"), gzipped=True)
    bad = tmp_path / "notes.fits"
    bad.write_text("not pixels\n")
    truncated = tmp_path / "truncated.fits"
    make_raw(truncated)
    truncated.write_bytes(truncated.read_bytes()[:20000])

    assert main(["info", str(bad), str(good), str(truncated)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(good)
    for text in (
        "lsstCam (camera LSSTCam)",
        "MC_O_20250415_000060 (day_obs 20250415, seq 60)",
        "R22_S11 (id 94), vendor E2V",
        "FLAT, exposure 15.0 s, filter r_57",
        "16 (C10..C17, C07..C00), raw 30 x 40 int32, DATASEC [4:24,1:35]",
        "data 21 x 35, prescan 3 cols, serial overscan 6 cols, parallel overscan 5 rows",
        "compression  whole-file gzip",
    ):
        assert text in out
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}: not a FITS file")
    assert lines[1].startswith(f"{truncated}: truncated file")


def test_all_good_exits_zero_and_guider_is_one_line(tmp_path, capsys):
    good = tmp_path / "raw.fits"
    make_raw(good, rice=True)
    guider = tmp_path / "MC_C_20240918_000013_R00_SG0_guider.fits"
    make_guider(guider, 4)
    assert main(["info", str(good), str(guider)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "compression  RICE_1 tiles" in out
    assert f"{guider}: guider stamp file with 4 stamps (not a CCD raw)" in out.splitlines()


def test_info_does_not_import_qt(tmp_path):
    good = tmp_path / "raw.fits"
    make_raw(good)
    code = (
        "import sys; from cvt.cli import main; rc = main(['info', sys.argv[1]]); "
        "qt = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]; "
        "sys.exit(rc or (3 if qt else 0))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(good)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "R01_S01 (id 1), vendor ITL" in done.stdout


@pytest.mark.realdata
def test_real_files(obs_lsst, capsys):
    raws = sorted(str(p) for p in (obs_lsst / "raw").iterdir())
    guiders = sorted(str(p) for p in (obs_lsst / "guider").iterdir())
    assert main(["info", *raws, *guiders]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for text in (
        "R22_S21 (id 97), vendor ITL",
        "the file says ITL but the camera table has E2V for R22_S21",
        "R14_S11 (id 67), vendor E2V",
        "TS8 (camera LSSTCam)",
        "RXX_S00 (id 0), vendor ITL",
        "COMCAM (camera ComCam)",
        "RICE_1 tiles inside whole-file gzip",
        "guider stamp file with 92 stamps",
        "guider stamp file with 102 stamps",
    ):
        assert text in out
    assert out.count("  detector     ") == len(raws)
