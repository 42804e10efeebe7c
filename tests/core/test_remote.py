"""Exposures read remotely (HTTP from ``cvt serve``, S3 from moto's server) equal the local read.

Real servers on loopback: the application of ``cvt serve`` in a thread (``BackgroundServer``,
with latency and failures injected where a test needs them), python's own ``http.server`` as a
plain static server, and moto's S3 server; nothing is mocked. The exposure is one simulated
CCD, ingested: real pixels in every chunk (the real test raws are mostly flat biases).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core import remote
from core.exposure import ExposureError, list_exposures, open_exposure, write_table
from core.ingest import ingest
from core.lazyzarr import CorruptChunk, read_chunk
from core.simulate import simulate_exposure
from core.zarrio import Writer
from cvt.server import STATS, BackgroundServer, Faults, make_app

OBSID = "MC_O_20261125_000001"
DET = "R00_SW0"  # a wavefront sensor: half a CCD, 4 x 8 chunks at level 0
ROOT = Path(__file__).resolve().parents[2]
N_CHUNKS = 4 * 8  # level 0 of DET: 2000 x 4072 pixels in 512 x 512 chunks


# ---------------------------------------------------------------------------------------------
# Test exposures (shared with tests/cvt/test_serve.py)


def add_metrics_table(folder: Path) -> None:
    """Give an exposure a per-amp ``metrics`` table when the ingest did not (yet) write one,
    and put it in the consolidated metadata like the ingest would."""
    exp = open_exposure(folder)
    if exp.table("metrics"):
        return
    rows = [(d, a["name"]) for d in exp.detector_names for a in exp.detector(d).amps]
    rng = np.random.default_rng(1)
    n = len(rows)
    health = np.array(["ok"] * n, dtype=object)
    health[1], health[2] = "warn", "fail"
    dead = np.zeros(n)
    dead[2] = 1.0
    columns = {
        "detector": np.array([r[0] for r in rows]),
        "amp": np.array([r[1] for r in rows]),
        "read_noise_adu": rng.normal(5, 0.3, n),
        "bias_level": rng.normal(25000, 50, n),
        "dead": dead,
        "health": health.astype(str),
    }
    writer = Writer(str(folder))
    write_table(writer, "metrics", columns)
    root = json.loads((folder / "zarr.json").read_text())
    nodes = root["consolidated_metadata"]["metadata"]
    nodes.update(writer.nodes)
    root["consolidated_metadata"]["metadata"] = dict(sorted(nodes.items()))
    (folder / "zarr.json").write_text(json.dumps(root))


def make_repo(repo: Path, raws: list[Path]) -> Path:
    """A repository of these raw files, each exposure with a metrics table."""
    reports, unreadable = ingest(raws, repo, workers=1)
    assert not unreadable
    assert all(r.ok and not r.failures for r in reports)
    for r in reports:
        add_metrics_table(r.path)
    return repo


def simulated_repo(tmp: Path, detectors=(DET,), seed: int = 5) -> Path:
    sim = simulate_exposure(tmp / "raw", detectors=list(detectors), seed=seed, workers=1)
    assert sim.obsid == OBSID
    return make_repo(tmp / "repo", list(sim.files))


def assert_same_exposure(got, want, window=np.s_[:, :]) -> None:
    """Attributes, level 0 (in ``window``), biases, the coarsest overview, the metrics table."""
    assert got.attrs == want.attrs
    assert got.overview_attrs == want.overview_attrs
    for name in want.detector_names:
        g, w = got.detector(name), want.detector(name)
        assert g.attrs == w.attrs
        level0 = w.level(0)[window]
        assert np.unique(level0).size > 1000  # real pixels, not a constant
        np.testing.assert_array_equal(g.level(0)[window], level0)
        np.testing.assert_array_equal(g.row_bias, w.row_bias)
    coarsest = len(want.overview_attrs["factors"]) - 1
    np.testing.assert_array_equal(got.overview_level(coarsest)[:], want.overview_level(coarsest)[:])
    gt, wt = got.table("metrics"), want.table("metrics")
    assert list(gt) == list(wt) and wt
    for col in wt:
        np.testing.assert_array_equal(gt[col], wt[col])


@pytest.fixture(autouse=True)
def remote_settings(tmp_path):
    """A private disk cache and short back-off waits for every test."""
    old = remote.configure(cache_dir=tmp_path / "chunk-cache", backoff=0.002, backoff_max=0.02)
    yield
    remote.restore(old)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return simulated_repo(tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="module")
def local(repo):
    return open_exposure(repo / f"{OBSID}.zarr")


@pytest.fixture(scope="module")
def served(repo):
    app = make_app(repo)
    with BackgroundServer(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def s3(repo, moto_s3):
    """moto's S3 server on loopback, the repository uploaded with s3fs."""
    import s3fs

    options, _ = moto_s3
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.mkdir("cvt-repo")
    fs.put(str(repo / f"{OBSID}.zarr"), f"cvt-repo/{OBSID}.zarr", recursive=True)
    return options


# ---------------------------------------------------------------------------------------------
# One test class for every kind of store: local folder, HTTP, S3


@pytest.fixture(scope="module", params=["local", "http", "s3"])
def source(request, repo):
    """(repository URL, storage options) of each store kind."""
    if request.param == "local":
        return str(repo), None
    if request.param == "http":
        url, _ = request.getfixturevalue("served")
        return url, None
    return "s3://cvt-repo/", request.getfixturevalue("s3")


class TestStores:
    def test_lists_the_published_exposures(self, source, repo):
        url, options = source
        assert list_exposures(url, storage_options=options) == [OBSID]

    def test_same_attrs_pixels_and_metrics_as_local(self, source, local):
        url, options = source
        got = open_exposure(f"{url.rstrip('/')}/{OBSID}.zarr", storage_options=options)
        assert_same_exposure(got, local)

    def test_chunks_read_directly_are_zarrs_and_a_missing_one_is_none(self, source, local):
        """``read_chunk`` (the viewer's tile read) through each store kind."""
        url, options = source
        got = open_exposure(f"{url.rstrip('/')}/{OBSID}.zarr", storage_options=options)
        name = local.detector_names[0]
        for level in (0, 3):
            arr, want = got.detector(name).level(level), local.detector(name).level(level)
            ny, nx = (-(-s // c) for s, c in zip(want.shape, want.chunks))
            for ty, tx in {(0, 0), (ny - 1, nx - 1)}:
                (cy, cx), (sy, sx) = want.chunks, want.shape
                region = np.s_[ty * cy : min(sy, (ty + 1) * cy), tx * cx : min(sx, (tx + 1) * cx)]
                np.testing.assert_array_equal(read_chunk(arr, (ty, tx)), want[region])
        assert read_chunk(got.detector(name).level(0), (99, 99)) is None

    def test_missing_exposure_is_a_clear_error(self, source):
        url, options = source
        with pytest.raises(ExposureError, match=r"NOPE\.zarr"):
            open_exposure(f"{url.rstrip('/')}/NOPE.zarr", storage_options=options)


def test_s3_endpoint_and_credentials_from_the_standard_environment(s3, local, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    assert list_exposures("s3://cvt-repo") == [OBSID]
    got = open_exposure(f"s3://cvt-repo/{OBSID}.zarr")
    assert got.attrs == local.attrs
    np.testing.assert_array_equal(got.overview_level(3)[:], local.overview_level(3)[:])


# ---------------------------------------------------------------------------------------------
# HTTP: one request to open, concurrency, the disk cache


def test_open_over_http_is_one_request(served):
    url, app = served
    app[STATS].reset()
    exp = open_exposure(url + f"{OBSID}.zarr")
    assert app[STATS].by_path == {f"/{OBSID}.zarr/zarr.json": 1}
    # everything the viewer needs to lay out the focal plane is in that one document
    assert [exp.detector(n).level_shapes for n in exp.detector_names]
    assert exp.overview_attrs["level_shapes"]
    assert app[STATS].requests == 1


def test_chunks_are_fetched_concurrently_under_latency(repo, local):
    remote.configure(cache_bytes=0)
    app = make_app(repo, faults=Faults(latency_ms=40))
    with BackgroundServer(app) as url:
        exp = open_exposure(url + f"{OBSID}.zarr")
        app[STATS].reset()
        data = exp.detector(DET).level(0)[:]
        assert app[STATS].requests == N_CHUNKS
        assert app[STATS].max_in_flight >= 8  # zarr's concurrency through our connection pool
    np.testing.assert_array_equal(data, local.detector(DET).level(0)[:])


def test_disk_cache_serves_a_second_open_and_survives_a_restart(served, local, tmp_path):
    url, app = served
    cache_dir = remote.settings().cache_dir
    exp = open_exposure(url + f"{OBSID}.zarr")
    exp.detector(DET).level(0)[:]
    assert remote.chunk_cache().nbytes() > 0

    app[STATS].reset()
    again = open_exposure(url + f"{OBSID}.zarr")
    np.testing.assert_array_equal(again.detector(DET).level(0)[:], local.detector(DET).level(0)[:])
    assert app[STATS].requests == 1  # the root document only: it says which version is cached
    assert again.root.store.stats.cache_hits == N_CHUNKS

    # another process (a restarted viewer) with the same cache folder
    app[STATS].reset()
    code = (
        "import sys, numpy as np; from core.exposure import open_exposure;"
        "e = open_exposure(sys.argv[1]); a = e.detector('R00_SW0').level(0)[:];"
        "print(e.root.store.stats.cache_hits, int(a.sum()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url + f"{OBSID}.zarr"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "CVT_CACHE_DIR": str(cache_dir)},
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == [str(N_CHUNKS), str(int(local.detector(DET).level(0)[:].sum()))]
    assert app[STATS].requests == 1


def test_disk_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path):
    cache = remote.ChunkCache(tmp_path / "c", max_bytes=10_000)
    for i in range(30):
        cache.put("ns", f"k{i}", bytes([i]) * 1000)
        assert cache.nbytes() <= 10_000
        if i >= 1:
            cache.get("ns", "k0")  # k0 stays in use: it is never the least recently used
            os.utime(cache.path("ns", "k0"), (1e10, 1e10))
    assert cache.get("ns", "k0") == bytes([0]) * 1000
    assert cache.get("ns", "k29") == bytes([29]) * 1000
    assert cache.get("ns", "k1") is None
    # another instance on the same folder (a restart) sees the same entries
    assert remote.ChunkCache(tmp_path / "c", 10_000).get("ns", "k29") == bytes([29]) * 1000
    cache.put("ns", "huge", b"x" * 5000)  # over a quarter of the bound: not cached
    assert cache.get("ns", "huge") is None


def test_a_replaced_exposure_is_not_served_from_the_cache(repo, tmp_path):
    own = tmp_path / "repo"
    shutil.copytree(repo / f"{OBSID}.zarr", own / f"{OBSID}.zarr")
    folder = own / f"{OBSID}.zarr"
    with BackgroundServer(make_app(own)) as url:
        exp = open_exposure(url + f"{OBSID}.zarr")
        before = exp.detector(DET).level(0)[:512, :512]
        # replace: another chunk's bytes in c/0/0, and a new root document (as a re-ingest makes)
        level0 = folder / "detectors/R00_SW0/0/c"
        shutil.copy(level0 / "2/3", level0 / "0/0")
        root = json.loads((folder / "zarr.json").read_text())
        root["attributes"]["cvt"]["written"] = "2099-01-01T00:00:00Z"
        (folder / "zarr.json").write_text(json.dumps(root))
        after = open_exposure(url + f"{OBSID}.zarr").detector(DET).level(0)[:512, :512]
    want = open_exposure(folder).detector(DET).level(0)[1024:1536, 1536:2048]
    np.testing.assert_array_equal(after, want)
    assert not np.array_equal(before, after)


def test_a_damaged_cache_file_is_detected_and_fetched_again(served, local):
    url, _ = served
    exp = open_exposure(url + f"{OBSID}.zarr")
    exp.detector(DET).level(0)[:512, :512]
    store = exp.root.store
    path = remote.chunk_cache().path(store._namespace, "detectors/R00_SW0/0/c/0/0")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    again = open_exposure(url + f"{OBSID}.zarr")
    np.testing.assert_array_equal(
        again.detector(DET).level(0)[:512, :512],
        local.detector(DET).level(0)[:512, :512],
    )
    assert again.root.store.stats.requests == 2  # the root document and the damaged chunk
    assert path.read_bytes() == data


# ---------------------------------------------------------------------------------------------
# Failures: retried when transient, detected when the data is wrong


def test_reads_succeed_through_injected_failures(repo, local):
    remote.configure(cache_bytes=0)
    rates = {"500": 0.05, "drop": 0.05, "truncate": 0.05, "short": 0.05}
    app = make_app(repo, faults=Faults(latency_ms=5, rates=rates, seed=7))
    with BackgroundServer(app) as url:
        exp = open_exposure(url + f"{OBSID}.zarr")
        assert_same_exposure(exp, local)
        stats = exp.root.store.stats
    assert stats.retries >= 3  # about 20 % of ~45 requests failed and were retried
    assert app[STATS].requests >= stats.requests


@pytest.mark.parametrize("kind", ["short", "truncate"])
def test_a_truncated_chunk_is_an_error_naming_its_url_never_data(repo, kind):
    app = make_app(repo, faults=Faults(rates={kind: 1.0}, match=lambda p: "/c/" in p))
    with BackgroundServer(app) as url:
        exp = open_exposure(url + f"{OBSID}.zarr")  # the root document is whole
        with pytest.raises(remote.RemoteError) as info:
            exp.detector(DET).level(0)[:512, :512]
        store = exp.root.store
    chunk_url = f"{url}{OBSID}.zarr/detectors/R00_SW0/0/c/0/0"
    assert chunk_url in str(info.value)
    # a body that is whole but wrong every time is the data's fault, like a local corrupt
    # chunk (readers do not retry it); a connection cut mid-body is the link's
    if kind == "short":
        assert isinstance(info.value, remote.CorruptResponse)
        assert isinstance(info.value, CorruptChunk)
        assert "truncated" in str(info.value)
    else:
        assert not isinstance(info.value, CorruptChunk)
    assert store.stats.retries == remote.settings().attempts - 1
    assert not remote.chunk_cache().path(store._namespace, "detectors/R00_SW0/0/c/0/0").exists()


def test_a_chunk_cut_short_between_other_failures_is_the_links_fault(repo):
    """Only a body that was wrong on every attempt is corrupt for good (not worth a retry
    later); here six 500s, then two short bodies (the faults' seed 5 draws them in that
    order): a flaky link, a ``RemoteError`` that is not a ``CorruptChunk``."""
    faults = Faults(rates={"short": 0.5, "500": 0.5}, seed=5, match=lambda p: "/c/" in p)
    app = make_app(repo, faults=faults)
    with BackgroundServer(app) as url:
        exp = open_exposure(url + f"{OBSID}.zarr")
        with pytest.raises(remote.RemoteError) as info:
            read_chunk(exp.detector(DET).level(0), (0, 0))
    assert exp.root.store.stats.requests == 1 + remote.settings().attempts
    assert "corrupt chunk" in str(info.value) and "truncated" in str(info.value)
    assert not isinstance(info.value, CorruptChunk)


def test_blosc_frame_check():
    import numcodecs

    data = numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.BITSHUFFLE).encode(
        np.arange(1000, dtype=np.int32)
    )
    assert remote.blosc_frame_ok(data, 4000) is None
    assert "truncated" in remote.blosc_frame_ok(data[:-1], 4000)
    assert "shorter" in remote.blosc_frame_ok(data[:10])
    assert "decoded" in remote.blosc_frame_ok(data, 8000)


# ---------------------------------------------------------------------------------------------
# Listing from any static HTTP server; a token


def test_list_exposures_from_a_plain_static_server(repo):
    hidden = repo / ".MC_O_20261125_000002.zarr.partial-0000"
    hidden.mkdir(exist_ok=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        assert list_exposures(url) == [OBSID]
        exp = open_exposure(url + f"{OBSID}.zarr")
        assert exp.detector_names == [DET]
    finally:
        httpd.shutdown()
        httpd.server_close()
        hidden.rmdir()


def test_token(repo, local):
    app = make_app(repo, token="s3cr3t-t0ken")
    with BackgroundServer(app) as url:
        with pytest.raises(ExposureError, match="401"):
            open_exposure(url + f"{OBSID}.zarr")
        with pytest.raises(remote.RemoteError, match="401"):
            list_exposures(url)
        opts = {"token": "s3cr3t-t0ken"}
        assert list_exposures(url, storage_options=opts) == [OBSID]
        exp = open_exposure(url + f"{OBSID}.zarr", storage_options=opts)
        np.testing.assert_array_equal(exp.table("metrics")["amp"], local.table("metrics")["amp"])
