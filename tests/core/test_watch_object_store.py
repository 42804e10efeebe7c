"""``cvt watch RAWDIR --repo s3://...``: the watcher fills exposures in an object store (moto's
real S3 server on loopback) as it fills a folder, from real files dripped into a real folder.

A night of two ComCam exposures of two CCDs each (``--expect 2``) through ``python -m cvt watch``
with two worker processes, which reach the store through the standard AWS variables only: the
watcher is stopped while the second exposure fills and started again on the same ``--state``
after the rest of it, a junk file and a late copy have landed. Each exposure completes once,
nothing is lost or done twice, the stores equal a batch ``ingest`` into a folder, the catalog is
beside them in the bucket and the watcher's own state and failure log are in the local state
folder, not in the bucket. Then what a following reader sees, and the URLs refused.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from core import catalog
from core.exposure import ExposureError, open_exposure
from core.ingest import ingest
from core.simulate import simulate_exposure
from core.watch import FAILURE_LOG, Watcher, WatchError, default_state_dir
from tests.core.test_watch import (
    Running,
    _lines,
    assert_same_store,
    corrupt_rice_data,
    cvt_watch,
    die_after_publishing,
    kill_group,
    land,
    restarted_until_catalogued,
    wait_for,
)

DETECTORS = ("R22_S10", "R22_S11")
BUCKET = "cvt-watch"


@pytest.fixture(scope="module")
def s3(moto_s3):
    """An empty bucket; the standard AWS variables and the s3fs options that reach it."""
    import s3fs

    options, env = moto_s3
    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir(BUCKET)
    return env, options


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A science exposure, and a bias in RICE whose second CCD's data is corrupt."""
    src = tmp_path_factory.mktemp("night")
    e1 = simulate_exposure(
        src / "e1", camera="ComCam", detectors=DETECTORS, seed=7, image_type="science", seq=1,
        faults=False, workers=2,
    )  # fmt: skip
    e2 = simulate_exposure(
        src / "e2", camera="ComCam", detectors=DETECTORS, seed=7, image_type="bias", seq=2,
        faults=False, compress="rice", workers=2,
    )  # fmt: skip
    corrupt_rice_data(e2.files[1])
    return e1, e2


def bucket_keys(options: dict, prefix: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    return [k[len(prefix) + 1 :] for k in fs.find(prefix)]


def test_a_night_watched_into_s3_stopped_and_restarted(s3, aws_env, night, tmp_path):
    env, options = s3
    url = f"s3://{BUCKET}/night"
    rawdir, state, batch = tmp_path / "raw", tmp_path / "state", tmp_path / "batch"
    rawdir.mkdir()
    e1, e2 = night
    out1, out2 = tmp_path / "first.out", tmp_path / "second.out"
    first = cvt_watch(rawdir, url, out1, "--workers", "2", "--state", str(state), env=env)
    try:
        for f in (*e1.files, e2.files[0]):
            land(f, rawdir)
        wait_for(
            lambda: (
                f"{e1.obsid} complete" in out1.read_text() and f"ccd {e2.obsid}" in out1.read_text()
            ),
            180,
            "exposure 1 and exposure 2's first CCD",
        )
        first.send_signal(signal.SIGTERM)  # stops as Ctrl-C does: its tasks end, then it
        assert first.wait(60) == 0, out1.read_text()
    finally:
        kill_group(first)
    assert f"state: {state}; unreadable and late files: {state / FAILURE_LOG}" in out1.read_text()

    # what a reader sees of the exposure left filling
    partial = open_exposure(f"{url}/{e2.obsid}.zarr", storage_options=options)
    assert partial.complete is False and partial.detector_names == [DETECTORS[0]]
    assert np.isfinite(partial.detector(DETECTORS[0]).level(2)[:]).all()
    assert partial.table("metrics") == {}

    # the rest lands while no watcher runs: the corrupt CCD, junk, a late copy
    land(e2.files[1], rawdir)
    (rawdir / "junk.fits").write_bytes(b"not a FITS file at all" * 500)
    late = land(e1.files[0], rawdir, name="late_copy.fits")
    second = cvt_watch(
        rawdir, url, out2, "--workers", "2", "--state", str(state), "--exit-when-idle", "2",
        env=env,
    )  # fmt: skip
    try:
        assert second.wait(timeout=300) == 0, out2.read_text()
    finally:
        kill_group(second)

    # each exposure completed once, each good CCD ingested once, nothing else
    ccd = r"ccd (\S+) (\S+)$"
    assert sorted(_lines(out1, ccd)) == [(e1.obsid, d) for d in DETECTORS] + [
        (e2.obsid, DETECTORS[0])
    ]
    assert _lines(out2, ccd) == []
    assert _lines(out2, r"resumed (\S+)") == [(e2.obsid,)]
    assert _lines(out1, r"(\S+) complete\b") == [(e1.obsid,)]
    assert _lines(out2, r"(\S+) complete\b") == [(e2.obsid,)]
    (failed,) = _lines(out2, r"(\S+) failed: (.*)$")
    assert failed[0] == e2.obsid and "RICE tile 0" in failed[1]
    for out in (out1, out2):
        assert "Traceback" not in out.read_text() and " error:" not in out.read_text()

    # the watcher's state and failure log: in the local state folder
    db = sqlite3.connect(state / "state.sqlite")
    statuses = dict(db.execute("SELECT path, status FROM files"))
    assert statuses == {
        **{str(rawdir / f.name): "ingested" for f in (*e1.files, e2.files[0])},
        str(rawdir / e2.files[1].name): "failed",
        str(rawdir / "junk.fits"): "unidentified",
        str(late): "late",
    }
    assert set(db.execute("SELECT status FROM exposures")) == {("complete",)}
    db.close()
    log = [json.loads(line) for line in (state / FAILURE_LOG).read_text().splitlines()]
    assert {Path(x["file"]).name for x in log} == {"junk.fits", "late_copy.fits"}
    # ... and the bucket holds the exposures and the catalog, nothing else
    keys = bucket_keys(options, f"{BUCKET}/night")
    assert {k.split("/")[0] for k in keys} == {
        "catalog.sqlite",
        f"{e1.obsid}.zarr",
        f"{e2.obsid}.zarr",
    }

    # the catalog, read from the bucket
    rows = {r["obsid"]: r for r in catalog.query_exposures(url)}
    assert {o: (r["complete"], r["n_detectors"], r["n_failures"]) for o, r in rows.items()} == {
        e1.obsid: (1, 2, 0),
        e2.obsid: (1, 1, 1),
    }

    # the same files through the batch ingest into a folder give the same stores
    for extra in ("junk.fits", "late_copy.fits"):
        (rawdir / extra).unlink()
    ingest([rawdir], batch, workers=1)
    skip = ("written", "ingest", "watch", "detectors_expected", "detectors_missing", "failures")
    for e in (e1, e2):
        w = open_exposure(f"{url}/{e.obsid}.zarr", storage_options=options)
        b = open_exposure(batch / f"{e.obsid}.zarr")
        assert w.complete
        assert_same_store(w, b)
        assert [f["file"] for f in w.attrs["failures"]] == [f["file"] for f in b.attrs["failures"]]
        assert {k: v for k, v in w.attrs.items() if k not in skip} == {
            k: v for k, v in b.attrs.items() if k not in skip
        }
        assert w.attrs["watch"]["latency_s"] >= 0
    assert open_exposure(f"{url}/{e2.obsid}.zarr").attrs["detectors_missing"] == [DETECTORS[1]]


def test_death_between_publishing_and_the_catalog(s3, aws_env, night, tmp_path):
    """The watcher dies right after an exposure's root says ``complete: true`` in the bucket,
    before its state or the catalog know: the restarted one records it in the bucket's catalog
    from its store, and completes nothing twice."""
    env, options = s3
    url = f"s3://{BUCKET}/death"
    rawdir, state = tmp_path / "raw", tmp_path / "state"
    rawdir.mkdir()
    e1 = night[0]
    out = tmp_path / "watch.out"
    die_after_publishing(e1.files, rawdir, url, out, "--state", str(state), env=env)
    assert open_exposure(f"{url}/{e1.obsid}.zarr", storage_options=options).complete
    with pytest.raises(catalog.CatalogError, match="no catalog there"):
        catalog.query_exposures(url)

    again = restarted_until_catalogued(rawdir, url, state=state)
    assert [(e.kind, e.obsid) for e in again.events] == [("catalogued", e1.obsid)]
    (row,) = catalog.query_exposures(url)
    assert (row["obsid"], row["complete"], row["n_detectors"]) == (e1.obsid, 1, 2)
    with catalog.open_catalog(url) as cat:
        assert cat.db.execute("SELECT count(*) FROM amps").fetchone()[0] == 2 * 16


def test_a_following_reader_sees_the_exposure_fill(s3, aws_env, night, tmp_path):
    """``open_exposure`` on the URL while the watcher fills it: ``complete: false`` and only
    the CCDs whose arrays are written, then the finished exposure; never a missing or broken
    root on the way. The state is in the user's cache, named by the URL."""
    url = f"s3://{BUCKET}/follow"
    e1 = night[0]
    store = f"{url}/{e1.obsid}.zarr"
    rawdir = tmp_path / "raw"
    rawdir.mkdir()

    def seen():
        try:
            x = open_exposure(store)
        except ExposureError:
            return None
        return x.complete, x.detector_names, "metrics" in x.root

    run = Running(rawdir, url)
    try:
        land(e1.files[0], rawdir)
        wait_for(lambda: seen() is not None, what="the exposure")
        views = [seen()]
        wait_for(lambda: seen() == (False, [DETECTORS[0]], False), what="the first CCD listed")
        x = open_exposure(store)
        assert x.complete is False and x.attrs["detectors"] == [DETECTORS[0]]
        assert np.isfinite(x.detector(DETECTORS[0]).level(1)[:]).all()
        assert np.isfinite(x.overview_level(3)[:]).any()
        assert x.table("metrics") == {}
        land(e1.files[1], rawdir)
        deadline = time.monotonic() + 120
        while views[-1] is None or not views[-1][0]:
            assert time.monotonic() < deadline, views[-5:]
            time.sleep(0.02)
            views.append(seen())
    finally:
        run.halt()
    assert None not in views
    filling = [v for v in views if not v[0]]
    assert filling and all(v[1] in ([], [DETECTORS[0]], list(DETECTORS)) for v in filling)
    assert not any(v[2] for v in filling)  # no tables before complete
    assert views[-1] == (True, list(DETECTORS), True)
    (done,) = run.watcher.done
    assert done.path == store
    state = default_state_dir(url)
    assert state.parent == tmp_path / "cache" / "cvt" / "watch"
    assert run.watcher.state_dir == state and (state / "state.sqlite").is_file()
    assert default_state_dir(url + "/") == state


def test_a_repository_the_watcher_cannot_write_is_refused_saying_why(s3, aws_env, tmp_path):
    from cvt.cli import main

    rawdir = tmp_path / "raw"
    rawdir.mkdir()
    with pytest.raises(ExposureError, match="serves a repository for reading only"):
        Watcher(rawdir, "http://127.0.0.1:9/repo", workers=1)
    with pytest.raises(ExposureError, match=r"cannot write there.*bucket"):
        Watcher(rawdir, "s3://no-such-bucket/repo", workers=1)
    with pytest.raises(ExposureError, match=r"cannot write there.*nosuch"):
        Watcher(rawdir, "nosuch://host/repo", workers=1)
    assert not (tmp_path / "cache").exists()  # no state made for them
    assert main(["watch", str(rawdir), "--repo", "https://host/repo"]) == 2

    # a state folder is its repository's: another's is refused
    url = f"s3://{BUCKET}/refused"
    Watcher(rawdir, url, workers=1, state=tmp_path / "state").close()
    with pytest.raises(WatchError, match=f"state of the watcher of {url}, not of"):
        Watcher(rawdir, url + "-other", workers=1, state=tmp_path / "state")
    assert bucket_keys(s3[1], f"{BUCKET}/refused") == []  # the write check left nothing
