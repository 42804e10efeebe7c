"""Ingest of real Rubin raws into exposure stores: lossless, placed right, atomic, robust."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from astropy.io import fits

from core.camera import load_camera
from core.exposure import ExposureError, list_exposures, open_exposure
from core.ingest import ingest
from core.rawfile import read_raw

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_repo(tmp_path_factory, obs_lsst):
    repo = tmp_path_factory.mktemp("repo")
    reports, unreadable = ingest([obs_lsst / "raw"], repo, workers=2)
    return repo, reports, unreadable


def test_every_real_raw_ingests(real_repo, obs_lsst):
    repo, reports, unreadable = real_repo
    assert unreadable == []
    assert all(r.ok and not r.failures for r in reports)
    got = {d for r in reports for d in r.detectors}
    assert got == {"RXX_S00", "R22_S00", "R10_S02", "R22_S21", "R22_S22", "R14_S11", "R21_S01"}
    assert len(list_exposures(repo)) == 6
    exp = open_exposure(repo / "MC_C_20190319_000001.zarr")
    assert exp.complete
    assert exp.detector_names == ["R10_S02", "R22_S21"]
    assert exp.attrs["camera"] == "LSSTCam"
    assert exp.attrs["image_type"] == "BIAS"
    assert exp.attrs["format_version"] == 1
    assert exp.attrs["detectors_expected"] == 205
    assert len(exp.attrs["detectors_missing"]) == 203


@pytest.mark.parametrize("name", [
    "30211212000310-R22-S22-det098.fits",  # RICE
    "201807241028453-RTM-010-S11-det067.fits",  # ts8, real pixels in Segment00
    "3019031900001-R10-S02-det029.fits",  # ITL
])
def test_level0_and_overscan_give_back_the_raw_exactly(real_repo, obs_lsst, name):
    repo, reports, _ = real_repo
    raw = read_raw(obs_lsst / "raw" / name)
    exp = open_exposure(repo / f"{raw.info.obsid}.zarr")
    det = exp.detector(raw.info.detector)
    np.testing.assert_array_equal(det.raw_segments(), raw.segments)


def test_ts8_amp_bias_and_values(real_repo):
    repo, _, _ = real_repo
    det = open_exposure(repo / "TS_C_20180723_000017.zarr").detector("R14_S11")
    c00 = [a["name"] for a in det.amps].index("C00")
    assert det.row_bias[c00, :2000].mean() == pytest.approx(27026, abs=20)
    px = det.pixel(1000, 100)  # C00 of an E2V CCD: bottom left, not flipped
    assert px["amp"] == "C00"
    assert px["raw"] - px["corrected"] == round(float(det.row_bias[c00, 1000]))
    assert 40000 < px["raw"] < 56000  # a flat at ~47800 ADU


def test_golden_e2v_assembly_holds_through_the_ingest(tmp_path, obs_lsst):
    src = obs_lsst / "assembly" / "e2v_spot.fits.gz"
    raw_copy = tmp_path / "raw" / "e2v_spot.fits"
    raw_copy.parent.mkdir()
    shutil.copy(src, raw_copy)
    reports, _ = ingest([raw_copy.parent], tmp_path / "repo", workers=1)
    (report,) = reports
    det = open_exposure(report.path).detector("R22_S11")
    assert det.quarter_turns == 0
    raw_image = det.level(0)[:] + det.bias_image()
    with gzip.open(obs_lsst / "assembly" / "e2v_expected_assembled.fits.gz") as f:
        expected = fits.getdata(f)
    np.testing.assert_array_equal(raw_image.astype(np.float32), expected)


def test_ngff_reader_places_the_detector(real_repo):
    ome_reader = pytest.importorskip("ome_zarr.reader")
    ome_io = pytest.importorskip("ome_zarr.io")
    repo, _, _ = real_repo
    node = next(iter(ome_reader.Reader(ome_io.parse_url(
        str(repo / "MC_C_20211212_000310.zarr" / "detectors" / "R22_S22")))()))
    transforms = node.metadata["coordinateTransformations"]
    assert len(node.data) == len(transforms) == 6
    scale = transforms[0][0]["scale"]
    (ty, tx) = transforms[0][1]["translation"]
    det = load_camera("LSSTCam").detector("R22_S22")
    # pixel (0, 0) centre in micrometres is the camera's CCD pixel (0, 0) centre
    fx, fy = det.ccd_to_fp(0, 0)
    assert (tx, ty) == pytest.approx((fx * 10, fy * 10))
    assert scale == [10.0, 10.0]
    assert node.data[0].shape == (4004, 4096)


def test_overview_covers_the_focal_plane(real_repo):
    repo, _, _ = real_repo
    exp = open_exposure(repo / "MC_C_20190319_000001.zarr")
    a = exp.overview_attrs
    level = exp.overview_level(0)[:]
    assert a["factors"] == [16, 32, 64, 128]
    assert level.shape[0] * 16 >= 63200
    # two zero-pixel bias CCDs: finite bins where they are, NaN elsewhere
    det = exp.detector("R22_S21")
    bx = int((det.origin[0] - a["origin"][0]) // 16) + 10
    by = int((det.origin[1] - a["origin"][1]) // 16) + 10
    assert np.isfinite(level[by, bx])
    assert np.isnan(level[0, 0])


def test_existing_exposure_is_refused_unless_replaced(real_repo, obs_lsst, tmp_path):
    repo, _, _ = real_repo
    f = obs_lsst / "raw" / "3019053000001-R22-S00-det000.fits"
    reports, _ = ingest([f], repo, workers=1)
    assert not reports[0].ok
    assert "already in the repository" in reports[0].failures[0]["reason"]
    reports, _ = ingest([f], repo, workers=1, replace=True)
    assert reports[0].ok
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_a_corrupt_ccd_does_not_stop_the_exposure(tmp_path, obs_lsst):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = obs_lsst / "raw" / "3019031900001-R10-S02-det029.fits"
    shutil.copy(good, raw / good.name)
    # the other CCD of the same exposure, truncated after its headers
    data = gzip.decompress((obs_lsst / "raw" / "3019031900001-R22-S21-det097.fits").read_bytes())
    (raw / "3019031900001-R22-S21-det097.fits").write_bytes(data[: len(data) // 3])
    (raw / "notes.txt").write_text("not a raw file")
    (raw / "bogus.fits").write_text("not FITS either")
    reports, unreadable = ingest([raw], tmp_path / "repo", workers=1)
    (report,) = reports
    assert report.ok
    assert report.detectors == ["R10_S02"]
    assert len(report.failures) == 1
    assert "R22-S21" in report.failures[0]["file"]
    exp = open_exposure(report.path)
    assert exp.attrs["failures"][0]["file"].endswith("det097.fits")
    assert [u["file"] for u in unreadable] == [str(raw / "bogus.fits")]


def test_an_interrupted_ingest_leaves_nothing_that_looks_complete(tmp_path, obs_lsst):
    def interrupt(obsid, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest([obs_lsst / "raw" / "3019053000001-R22-S00-det000.fits"], tmp_path / "repo",
               workers=1, progress=interrupt)
    assert list((tmp_path / "repo").iterdir()) == []


def _ctrl_c_inside(monkeypatch, module, name: str) -> list:
    """Replace ``module.name`` by itself preceded by a Ctrl-C; the list gets what each call
    returned, so only calls that ran to their end are in it."""
    import signal

    real = getattr(module, name)
    finished = []

    def interrupted(*args):
        signal.raise_signal(signal.SIGINT)
        finished.append(real(*args))
        return finished[-1]

    monkeypatch.setattr(module, name, interrupted)
    return finished


def test_ctrl_c_while_a_ccd_is_ingested_here_comes_when_it_is_done(tmp_path, obs_lsst, monkeypatch):
    """One worker: the CCD is ingested in this process. A Ctrl-C meanwhile stops the ingest once
    the CCD is done, as the pool's CCDs do; inside, it could land in llvmlite's ctypes callbacks
    (numba loading a kernel), which swallowed it."""
    import core.ingest

    finished = _ctrl_c_inside(monkeypatch, core.ingest, "_ingest_ccd")
    with pytest.raises(KeyboardInterrupt):
        ingest([obs_lsst / "raw" / "3019053000001-R22-S00-det000.fits"], tmp_path / "repo",
               workers=1)
    assert len(finished) == 1 and finished[0].error is None and finished[0].detector == "R22_S00"
    assert list((tmp_path / "repo").iterdir()) == []


def test_ctrl_c_while_the_overview_kernels_load_comes_when_they_are_loaded(monkeypatch):
    import core.exposure

    finished = _ctrl_c_inside(monkeypatch, core.exposure, "_bin_means")
    with pytest.raises(KeyboardInterrupt):
        core.exposure.load_overview_kernels.__wrapped__()  # not the once-per-process cache
    assert len(finished) == 1


def test_opening_something_else_says_what_is_wrong(tmp_path):
    with pytest.raises(ExposureError, match="not a readable exposure store"):
        open_exposure(tmp_path / "nothing.zarr")


def test_local_workers_fork_with_the_ingest_already_imported(tmp_path):
    """The pool's forkserver imports the ingest once (core._preload) as soon as the pool is
    made, and readies numba's CPU target (it imports numba.np.arraymath then) and the cameras,
    so a worker's first CCD does not begin with two seconds of imports and parsing."""
    import os
    import subprocess
    import sys

    (tmp_path / "probe_mod.py").write_text(
        "import sys\n\ndef probe():\n"
        "    from core.camera import load_camera\n"
        "    mods = ('core._preload', 'core.ingest', 'numba.np.arraymath')\n"
        "    return sorted(m for m in mods if m in sys.modules), load_camera.cache_info().currsize\n"
    )
    code = (
        "from core.distributed import make_executor\n"
        "import probe_mod\n"
        "if __name__ == '__main__':\n"
        "    ex = make_executor(None, 2, 4)\n"
        "    print(ex.submit(probe_mod.probe).result())\n"
        "    ex.shutdown()\n"
    )
    script = tmp_path / "run.py"
    script.write_text(code)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == (
        "(['core._preload', 'core.ingest', 'numba.np.arraymath'], 3)"
    ), out.stdout
