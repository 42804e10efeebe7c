"""Shared fixtures: where the real Rubin files are, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "obs_lsst"


@pytest.fixture(scope="session")
def obs_lsst() -> Path:
    """The real Rubin data folder (``../shared/data/obs_lsst``); skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip("real Rubin data (../shared/data/obs_lsst) is not present")
    return SHARED


@pytest.fixture(scope="module")
def moto_s3():
    """moto's S3 server on loopback (a real S3 HTTP server, in a thread): the s3fs
    ``storage_options`` that reach it and the same as the standard AWS variables (for processes
    that get no options, such as ingest workers)."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    env = {
        "AWS_ENDPOINT_URL": options["endpoint_url"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    yield options, env
    server.stop()


@pytest.fixture
def aws_env(moto_s3, monkeypatch, tmp_path):
    """moto's S3 through the standard AWS variables in this process too (s3fs without options),
    the user's cache (remote chunks, a URL's watcher state) in tmp, and no s3fs instance kept
    from before them or left after. Yields the variables."""
    import s3fs

    _, env = moto_s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    s3fs.S3FileSystem.clear_instance_cache()
    yield env
    s3fs.S3FileSystem.clear_instance_cache()
