"""The whole ingest on simulated raws: level 0 against an independent numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.camera import load_camera
from core.exposure import open_exposure
from core.ingest import ingest
from core.isr import IsrConfig
from core.rawfile import read_raw
from core.simulate import simulate_exposure
from tests.core import reference as ref

DETECTORS = ["R22_S11", "R01_S00", "R00_SG0", "R04_SW1"]  # E2V, ITL, rotated guider, wavefront


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    sim = simulate_exposure(tmp / "raw", detectors=DETECTORS, seed=5, workers=1)
    reports, unreadable = ingest([tmp / "raw"], tmp / "repo", workers=2)
    return sim, reports, unreadable


def test_simulated_exposure_ingests_whole(simulated):
    sim, reports, unreadable = simulated
    assert unreadable == []
    (report,) = reports
    assert report.ok
    assert not report.failures
    assert sorted(report.detectors) == sorted(DETECTORS)
    exp = open_exposure(report.path)
    assert exp.obsid == sim.obsid
    assert exp.attrs["image_type"].lower() == "science"


@pytest.mark.parametrize("name", DETECTORS)
def test_level0_equals_numpy_reference_of_overscan_and_assembly(simulated, name):
    sim, reports, _ = simulated
    path = next(p for p in sim.files if name in p.name)
    raw = read_raw(path)
    cfg = IsrConfig()
    ox0, ox1 = cfg.serial_columns(raw.datasec, raw.segments.shape[2])
    row_bias = ref.serial_overscan_rows(raw.segments, ox0, ox1, cfg.clip)
    assembled = ref.assemble(raw.segments, raw.datasec, raw.info.vendor, row_bias)
    turns = load_camera("LSSTCam").detector(name).quarter_turns
    expected = np.rot90(assembled, turns, axes=(1, 0))
    det = open_exposure(reports[0].path).detector(name)
    np.testing.assert_array_equal(det.level(0)[:], expected)
    np.testing.assert_array_equal(det.raw_segments(), raw.segments)


def test_pyramid_levels_are_area_means(simulated):
    sim, reports, _ = simulated
    det = open_exposure(reports[0].path).detector("R22_S11")
    level0 = det.level(0)[:].astype(np.float64)
    level1 = det.level(1)[:]
    np.testing.assert_allclose(level1, ref.downsample2(level0), rtol=1e-6)
    assert det.level_shapes[-1] == (126, 128)


def test_stars_land_where_the_truth_puts_them(simulated):
    """A bright unsaturated star's peak is at its focal-plane position in the store."""
    sim, reports, _ = simulated
    stars = sim.truth["stars"]
    exp = open_exposure(reports[0].path)
    cam = load_camera("LSSTCam")
    order = np.argsort(stars["flux"])[::-1]
    checked = 0
    for i in order:
        if stars["saturated"][i] or stars["detector"][i] not in DETECTORS:
            continue
        det = exp.detector(stars["detector"][i])
        fx, fy = stars["fp_x"][i], stars["fp_y"][i]
        col = int(np.floor(fx - det.origin[0]))
        row = int(np.floor(fy - det.origin[1]))
        if not (5 <= row < det.level_shapes[0][0] - 5 and 5 <= col < det.level_shapes[0][1] - 5):
            continue
        box = det.level(0)[row - 3 : row + 4, col - 3 : col + 4]
        r, c = np.unravel_index(np.argmax(box), box.shape)
        assert (abs(r - 3), abs(c - 3)) <= (1, 1), stars["detector"][i]
        # and the camera geometry agrees with the stored placement
        x, y = cam.detector(stars["detector"][i]).fp_to_ccd(fx, fy)
        assert (x, y) == pytest.approx((stars["ccd_x"][i], stars["ccd_y"][i]), abs=1e-6)
        checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_a_pixel_of_a_missing_chunk_says_so(simulated, tmp_path):
    """zarr reads a chunk the store lacks as its fill value (0): the hover readout then showed
    "corrected 0 raw <bias>", values the CCD never had. ``pixel`` says the data is missing."""
    import shutil

    _, reports, _ = simulated
    copy = tmp_path / Path(reports[0].path).name
    shutil.copytree(reports[0].path, copy)
    (copy / "detectors" / "R22_S11" / "0" / "c" / "1" / "2").unlink()
    det = open_exposure(copy).detector("R22_S11")
    gone = det.pixel(512 + 7, 1024 + 9)
    assert gone["missing"] == "missing chunk"
    assert gone["corrected"] is None and gone["raw"] is None
    assert gone["amp"] is not None  # where it is still holds
    kept = det.pixel(7, 9)
    assert kept["missing"] is None and kept["corrected"] == int(det.level(0)[7, 9])
    assert kept["raw"] == open_exposure(reports[0].path).detector("R22_S11").pixel(7, 9)["raw"]
    with pytest.raises(IndexError):
        det.pixel(4004, 0)


def test_a_failing_step_never_stops_the_exposure(tmp_path, monkeypatch):
    """An unexpected error in one CCD's metrics keeps its pixels (and says so); an unexpected
    error in another CCD's processing drops only that CCD."""
    from core import ingest as ingest_mod
    from core import metrics

    sim = simulate_exposure(
        tmp_path / "raw",
        detectors=["R22_S11", "R22_S12", "R22_S21"],
        seed=3,
        faults=False,
        workers=1,
    )
    real_measure, real_process = metrics.measure_ccd, ingest_mod.process_ccd

    def measure(raw, product, detector, config):
        if detector.name == "R22_S11":
            raise ZeroDivisionError("injected")
        return real_measure(raw, product, detector, config)

    def process(raw, camera, config, **kw):
        if raw.info.detector == "R22_S21":
            raise RuntimeError("injected")
        return real_process(raw, camera, config, **kw)

    monkeypatch.setattr(metrics, "measure_ccd", measure)
    monkeypatch.setattr(ingest_mod, "process_ccd", process)
    (report,), _ = ingest([sim.outdir], tmp_path / "repo", workers=1)
    assert report.ok
    assert sorted(report.detectors) == ["R22_S11", "R22_S12"]
    reasons = {
        f["file"].rsplit("_", 2)[-2] + "_" + f["file"].rsplit("_", 1)[-1][:3]: f["reason"]
        for f in report.failures
    }
    assert "RuntimeError: injected" in reasons["R22_S21"]
    assert "metrics and sources failed: ZeroDivisionError" in reasons["R22_S11"]
    exp = open_exposure(report.path)
    assert set(exp.table("metrics")["detector"]) == {"R22_S12"}
    assert exp.detector("R22_S11").level(0).shape == (4004, 4096)


def test_sources_are_stars_not_steps_between_amps(simulated):
    """Detection runs in electrons (each amp times its gain): in ADU, the sky steps where amps of
    different gains meet, and the background mesh cannot follow a step, so a row of huge false
    "sources" lined a CCD's midline. Now every large source is a star of the truth."""
    sim, reports, _ = simulated
    stars = sim.truth["stars"]
    sources = open_exposure(reports[0].path).table("sources")
    sx, sy = np.asarray(stars["fp_x"]), np.asarray(stars["fp_y"])
    for name in ("R22_S11", "R01_S00"):
        mine = np.asarray(sources["detector"]) == name
        x, y, npix = (np.asarray(sources[c])[mine] for c in ("fp_x", "fp_y", "npix"))
        d = np.sqrt((x[:, None] - sx[None, :]) ** 2 + (y[:, None] - sy[None, :]) ** 2).min(axis=1)
        false = d > 5
        assert len(x) > 200, name
        assert npix[false].max(initial=0) < 1000, (name, np.sort(npix[false])[-5:])
        assert false.mean() < 0.2, (name, false.sum(), len(x))


def test_cvt_ingest_as_the_program_leaves_everything_written(simulated, tmp_path):
    """``cvt ingest`` run as the program ends without the interpreter's teardown: its report is
    printed, a corrupt file named with its exit code, the exposure published, the catalog row
    committed and the exit handlers run."""
    import os
    import shutil
    import subprocess
    import sys

    from core.catalog import query_exposures

    raw = tmp_path / "raw"
    shutil.copytree(simulated[0].outdir, raw)
    bad = raw / "MC_O_20261125_000001_R22_S12.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"\x00" * 100)
    code = (
        "import atexit, sys\n"
        "from cvt.cli import main\n"
        f"atexit.register(lambda: open({str(tmp_path / 'handler-ran')!r}, 'w').close())\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(main())\n"
    )
    script = tmp_path / "cvt_program.py"
    script.write_text(code)
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTHONUNBUFFERED", None)  # output through a pipe is buffered, as it is for users
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "ingest",
            str(raw),
            "--repo",
            str(tmp_path / "repo"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr  # the corrupt file: a failure, the rest is in
    assert f"{len(DETECTORS)} CCDs in" in out.stdout
    assert str(bad) in out.stderr
    assert (tmp_path / "handler-ran").exists()
    (row,) = query_exposures(tmp_path / "repo")
    assert row["obsid"] == "MC_O_20261125_000001"
    assert open_exposure(tmp_path / "repo" / "MC_O_20261125_000001.zarr").complete


def test_parallel_overscan_ingest_keeps_the_raw_exact(simulated, tmp_path):
    """``--parallel-overscan``: each data column is corrected by its parallel bias too, the store
    keeps that bias, and the raw segments still come back bit for bit."""
    sim = simulated[0]
    path = Path(sim.outdir) / f"{sim.obsid}_R22_S11.fits"
    reports, _ = ingest([path], tmp_path / "repo", workers=1, config=IsrConfig(parallel=True))
    det = open_exposure(reports[0].path).detector("R22_S11")
    raw = read_raw(path)
    np.testing.assert_array_equal(det.raw_segments(), raw.segments)
    serial = ref.serial_overscan_rows(raw.segments, 522 + 3, 576 - 2)  # E2V, edges skipped
    want = ref.parallel_overscan_cols(raw.segments, serial, raw.datasec)
    np.testing.assert_allclose(det.col_bias, want, rtol=0, atol=1e-3)
    assert np.abs(det.col_bias).max() > 0.1  # not all zero: the correction ran
    amp = next(a for a in det.amps if a["name"] == "C00")  # E2V C00: not flipped, not turned
    i = [a["name"] for a in det.amps].index("C00")
    x0, _, y0, _ = raw.datasec
    v, u = 100, 200
    want_value = raw.segments[i, y0 + v, x0 + u] - np.rint(det.row_bias[i, y0 + v]) - np.rint(
        det.col_bias[i, u]
    )
    level0 = det.level(0)[:]
    ccd = np.rot90(level0, -det.quarter_turns, axes=(1, 0))
    assert ccd[amp["y0"] + v, amp["x0"] + u] == want_value
