"""``cvt trend``, ``cvt catalog`` and ``cvt watch`` from the command line, on a small catalog made
directly (the pipeline behind it is tested in tests/core/test_catalog.py and test_watch.py) and
on a simulated night ingested for real."""

from __future__ import annotations

import numpy as np
import pytest

from core import catalog
from cvt.cli import main
from tests.core.test_catalog import AMP, FACTORS, simulate_noisy_night

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

    from tests.cvt.test_compare import as_array

    image = QImage(str(png))
    assert image.width() == 1000 and 400 <= image.height() <= 600
    # the points as drawn: four ok (green) then one failing (red), each higher than the last
    pixels = as_array(image)
    points = []
    for status, colour in (("ok", (60, 170, 90)), ("fail", (220, 50, 50))):
        ys, xs = np.nonzero(np.all(pixels == colour, axis=2))
        clusters = np.split(np.argsort(xs), np.flatnonzero(np.diff(np.sort(xs)) > 3) + 1)
        points.extend((xs[c].mean(), ys[c].mean(), status) for c in clusters if len(c))
    points.sort()
    assert [s for _, _, s in points] == ["ok"] * 4 + ["fail"]
    rows = [y for _, y, _ in points]
    assert np.all(np.diff(rows) < 0)  # image rows grow downwards: the noise rises
    # as far apart as the values: the same scale within a few pixels
    scale = (rows[0] - rows[-1]) / (NOISE[-1] - NOISE[0])
    np.testing.assert_allclose(
        rows[0] - np.array(rows), scale * (np.array(NOISE) - NOISE[0]), atol=3
    )


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    repo, reports = simulate_noisy_night(tmp_path_factory.mktemp("night"))
    return repo, sorted(r.obsid for r in reports)


def test_trend_on_a_simulated_night(night, capsys):
    """The issue's own example, ``--metric read_noise``: the catalog's read noise in electrons,
    drifting up on C07 as simulated; a misspelt metric lists the ones there are."""
    repo, obsids = night
    assert main(["trend", str(repo), "--amp", AMP, "--metric", "read_noise", "--vs", "seq"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["obsid", "seq", "time", "(UTC)", "airmass"]
    assert "read_noise_e" in lines[0]
    want = catalog.query_amp(repo, AMP, "read_noise_e")
    for line, obsid, row in zip(lines[1:5], obsids, want):
        assert line.split()[0] == obsid and f"{row['value']:.4g}" in line.split()
    values = np.array([r["value"] for r in want])
    np.testing.assert_allclose(values / values[0], FACTORS, rtol=0.08)
    spark = lines[6].split()[0]
    assert len(spark) == 4 and spark[0] == "▁" and spark[-1] == "█"
    assert "slope" in lines[7] and float(lines[7].split()[1]) > 0
    assert main(["trend", str(repo), "--amp", AMP, "--metric", "read_nosie"]) == 2
    err = capsys.readouterr().err
    assert "no metric 'read_nosie'" in err and "read_noise_e" in err and "bias_level" in err


def test_catalog_lists_a_detectors_amps(night, capsys):
    repo, obsids = night
    args = ["catalog", "list", str(repo), "--detector", "RXX_S00", "--metric", "read_noise"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "obsid", "seq", "time", "image_type", "amp", "status", "read_noise_e"
    ]  # fmt: skip
    assert len(lines) == 1 + 4 * 16
    c07 = [line.split() for line in lines[1:] if line.split()[4] == "C07"]
    assert [c[0] for c in c07] == obsids
    want = [f"{r['value']:.4g}" for r in catalog.query_amp(repo, AMP, "read_noise_e")]
    assert [c[6] for c in c07] == want
    assert main([*args, "--image-type", "flat"]) == 1
    assert "no amps of RXX_S00" in capsys.readouterr().err
    assert main([*args[:-1], "nope"]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err


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
    assert not (tmp_path / "repo" / "catalog.sqlite").exists()  # nothing to catalogue
