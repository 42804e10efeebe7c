"""An ingest whose repository is an object store (moto's S3 server on loopback): the worker
processes write their CCDs through fsspec, the exposure fills at its final name and is
complete only when published, and it equals the same ingest into a folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.exposure import ExposureError, exposure_builder, list_exposures, open_exposure
from core.ingest import ingest
from core.simulate import simulate_exposure

ROOT = str(Path(__file__).resolve().parents[2])
DETECTORS = ["R22_S11", "R00_SG0"]


@pytest.fixture(scope="module")
def s3(moto_s3):
    """An empty bucket; the standard AWS variables and the s3fs options that reach it."""
    import s3fs

    options, env = moto_s3
    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir("cvt-bucket")
    return env, options


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("objstore") / "raw"
    simulate_exposure(out, detectors=DETECTORS, seed=8, workers=1)
    return out


def test_cvt_ingest_into_s3_with_worker_processes_equals_a_folder(s3, raw, tmp_path):
    env, options = s3
    url = "s3://cvt-bucket/repo"
    run_env = dict(os.environ, **env)
    run_env["PYTHONPATH"] = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "cvt", "ingest", str(raw), "--repo", url, "--workers", "2",
         "--quiet"],
        capture_output=True, text=True, env=run_env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    (obsid,) = list_exposures(url, storage_options=options)
    assert f"-> {url}/{obsid}.zarr" in out.stdout

    (local,), _ = ingest([raw], tmp_path / "repo", workers=1)
    a = open_exposure(local.path)
    b = open_exposure(f"{url}/{obsid}.zarr", storage_options=options)
    assert b.complete
    assert b.detector_names == a.detector_names
    assert sorted(a.detector_names) == sorted(DETECTORS)
    for name in DETECTORS:
        da, db = a.detector(name), b.detector(name)
        for level in range(len(da.level_shapes)):
            np.testing.assert_array_equal(db.level(level)[:], da.level(level)[:])
        np.testing.assert_array_equal(db.raw_segments(), da.raw_segments())
    np.testing.assert_array_equal(b.overview_level(0)[:], a.overview_level(0)[:])
    for column in ("read_noise_e", "bias_level"):
        np.testing.assert_array_equal(b.table("metrics")[column], a.table("metrics")[column])

    again = subprocess.run(
        [sys.executable, "-m", "cvt", "ingest", str(raw), "--repo", url, "--quiet"],
        capture_output=True, text=True, env=run_env, timeout=600,
    )
    assert again.returncode == 1
    assert "already in the repository" in again.stderr


def test_an_object_store_exposure_is_filling_until_published_and_gone_if_abandoned(s3, aws_env):
    _, options = s3
    url = "s3://cvt-bucket/filling"
    builder = exposure_builder(url, "XX_C_20990101_000001")
    seen = open_exposure(builder.final, storage_options=options)
    assert not seen.complete  # visible as it fills, never as complete
    builder.publish({"obsid": "XX_C_20990101_000001", "complete": True}, builder.writer.nodes)
    assert open_exposure(builder.final, storage_options=options).complete
    with pytest.raises(ExposureError, match="already in the repository"):
        exposure_builder(url, "XX_C_20990101_000001")

    gone = exposure_builder(url, "XX_C_20990101_000002")
    gone.abandon()
    assert list_exposures(url, storage_options=options) == ["XX_C_20990101_000001"]


def test_the_catalog_of_an_object_store_repository(s3, aws_env, raw):
    """Written beside the exposures (fetched, changed, put back) and read like any remote one;
    nothing lands in a local folder named after the URL."""
    from core.catalog import query_exposures, rebuild

    url = "s3://cvt-bucket/catalogued"
    (report,), _ = ingest([raw], url, workers=1)
    assert report.ok
    (row,) = query_exposures(url)
    assert row["obsid"] == report.obsid and row["n_detectors"] == len(DETECTORS)
    assert rebuild(url) == 1
    assert [r["obsid"] for r in query_exposures(url)] == [report.obsid]
    assert not Path("s3:").exists()
