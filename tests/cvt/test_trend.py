"""``cvt trend``, ``cvt catalog`` and ``cvt watch`` from the command line, on a small catalog made
directly (the pipeline behind it is tested in tests/core/test_catalog.py and test_watch.py)."""

from __future__ import annotations

import pytest

from core import catalog
from cvt.cli import main

NOISE = (5.0, 5.5, 6.1, 6.8, 7.4)


@pytest.fixture
def repo(tmp_path):
    """Five bias exposures of one CCD; C07's read noise grows, C03's stays put."""
    db = catalog.connect(tmp_path)
    for i, noise in enumerate(NOISE):
        obsid = f"AT_O_20261125_{i + 1:06d}"
        row = {
            "obsid": obsid,
            "camera": "LATISS",
            "dayobs": 20261125,
            "seqnum": i + 1,
            "mjd": 61370.1 + i * 0.01,
            "time": f"2026-11-26T02:{24 + i * 14:02d}:00",
            "image_type": "BIAS",
            "airmass": 1.0 + 0.1 * i,
            "complete": 1,
            "n_detectors": 1,
            "n_expected": 1,
            "n_ok": 15,
            "n_warning": 0,
            "n_known": 0,
            "n_fail": 1,
        }
        amps = [
            {"obsid": obsid, "detector": "RXX_S00", "amp": amp, "status": status,
             "read_noise_e": value, "kind": "science"}
            for amp, value, status in (("C07", noise, "fail" if i == 4 else "ok"), ("C03", 5.0, "ok"))
        ]  # fmt: skip
        catalog._write(db, row, amps)
    db.close()
    return tmp_path


def test_trend_prints_the_series_and_a_sparkline(repo, capsys):
    assert main(["trend", str(repo), "--amp", "RXX_S00_C07", "--metric", "read_noise_e"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["obsid", "seq"]
    for i, noise in enumerate(NOISE):
        assert f"AT_O_20261125_{i + 1:06d}" in lines[i + 1] and f"{noise:.4g}" in lines[i + 1]
    assert "▁" in out and "█" in out and "slope" in out
    assert lines[5].rstrip().endswith("fail")


def test_trend_filters_and_axes(repo, capsys):
    args = ["trend", str(repo), "--amp", "RXX_S00_C07", "--metric", "read_noise_e"]
    assert main([*args, "--vs", "airmass", "--since", "61370.115"]) == 0
    out = capsys.readouterr().out
    assert "000001" not in out and "000002" not in out and "000003" in out
    assert "per unit airmass" in out
    assert main([*args, "--image-type", "flat"]) == 1
    assert main(["trend", str(repo), "--amp", "RXX_S00_C07", "--metric", "nope"]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err
    assert main(["trend", str(repo), "--metrics"]) == 0
    assert capsys.readouterr().out.split() == ["read_noise_e"]


@pytest.mark.gui
def test_trend_png(repo, tmp_path, capsys):
    png = tmp_path / "trend.png"
    args = ["trend", str(repo), "--amp", "RXX_S00_C07", "--metric", "read_noise_e", "--png"]
    assert main([*args, str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    from PySide6.QtGui import QImage

    image = QImage(str(png))
    assert image.width() == 1000 and 400 <= image.height() <= 600


def test_catalog_list_and_rebuild(repo, capsys):
    assert main(["catalog", "list", str(repo)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and out[0].startswith("AT_O_20261125_000001")
    # no stores in this repository: a rebuild leaves an empty catalog
    assert main(["catalog", "rebuild", str(repo)]) == 0
    assert "0 exposures" in capsys.readouterr().out
    assert main(["catalog", "list", str(repo)]) == 0
    assert capsys.readouterr().out == ""


def test_watch_records_a_junk_file_and_exits_when_idle(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "junk.fits").write_bytes(b"junk" * 2000)
    args = ["watch", str(raw), "--repo", str(tmp_path / "repo"), "--poll", "0.1"]
    assert main([*args, "--exit-when-idle", "0.5", "--quiet"]) == 0
    assert "unidentified" in capsys.readouterr().err
    assert (tmp_path / "repo" / "watch-failures.jsonl").is_file()
