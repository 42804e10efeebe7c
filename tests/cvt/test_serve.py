"""``cvt serve`` as users start it (a subprocess printing its URL), spoken to over raw sockets and
``http.client`` (no client-side path normalisation): HTTP semantics, the listing, the event
stream, and every refusal the security model promises."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from core import remote
from core.exposure import open_exposure
from core.ingest import ingest
from cvt.server import Refused, Repository, health_counts
from tests.core.test_remote import add_metrics_table

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[2]
PAIR = ["3019031900001-R10-S02-det029.fits", "3019031900001-R22-S21-det097.fits"]
OBSID = "MC_C_20190319_000001"
ONE = "3019053000001-R22-S00-det000.fits"
ONE_OBSID = "CC_C_20190530_000001"
EXP = f"/{OBSID}.zarr"
CHUNK = f"{EXP}/detectors/R10_S02/0/c/0/0"
SECRET = b"SECRET"
WRITE_METHODS = ["PUT", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "MKCOL", "MOVE",
                 "COPY", "LOCK", "TRACE"]  # fmt: skip


class Served:
    """``python -m cvt.cli serve REPO --port 0 ...`` in a subprocess; its access log in a file."""

    def __init__(self, repo: Path, log: Path, *extra: str):
        self.log = log
        # a file, not a pipe: a full pipe would stall the server
        self.stderr = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cvt.cli", "serve", str(repo), "--port", "0", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        m = re.search(r"(http://\S+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"cvt serve did not print its URL: {line!r} {log.read_text()}")
        self.url = m.group(1)
        self.banner = line
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port

    def request(self, path: str, method: str = "GET", headers=None, body=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def raw(self, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
        """A request line sent byte for byte: (status, whole response)."""
        with socket.create_connection((self.host, self.port), timeout=20) as s:
            s.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1]), data

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=10)
        finally:
            self.stderr.close()
        return self.proc.returncode, out


@pytest.fixture(autouse=True)
def private_chunk_cache(tmp_path):
    old = remote.configure(cache_dir=tmp_path / "chunk-cache")
    yield
    remote.restore(old)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, obs_lsst) -> Path:
    """A repository with one exposure, and everything a server must never hand out: symlinks
    out of it (a file, a folder, a whole exposure), a hidden partial exposure, hidden files."""
    tmp = tmp_path_factory.mktemp("serve")
    repo = tmp / "repo"
    ingest([obs_lsst / "raw" / n for n in PAIR], repo, workers=1)
    folder = repo / f"{OBSID}.zarr"
    add_metrics_table(folder)
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"TOP SECRET")
    (outside / "zarr.json").write_bytes(b'{"SECRET": 1}')
    (folder / "leak.json").symlink_to(outside / "secret.txt")
    (folder / "detectors" / "leakdir").symlink_to(outside, target_is_directory=True)
    (repo / "OUT.zarr").symlink_to(outside, target_is_directory=True)
    (folder / "alias.json").symlink_to(folder / "zarr.json")  # inside: fine to serve
    partial = repo / f".{ONE_OBSID}.zarr.partial-1234"
    partial.mkdir()
    (partial / "zarr.json").write_bytes(b'{"SECRET": "partial"}')
    (folder / ".hidden").write_bytes(b"SECRET hidden")
    (repo / "notes.txt").write_bytes(b"SECRET notes")
    return repo


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory):
    s = Served(repo, tmp_path_factory.mktemp("log") / "serve.log")
    yield s
    code, out = s.stop(signal.SIGTERM)
    assert code == 0 and "stopped" in out


def test_binds_loopback_and_prints_its_url(served):
    assert served.url.startswith("http://127.0.0.1:")
    status, _, body = served.request("/")
    assert status == 200 and f'href="{OBSID}.zarr/"'.encode() in body


# ---------------------------------------------------------------------------------------------
# HTTP semantics


def test_range_requests(served, repo):
    data = (repo / CHUNK[1:]).read_bytes()
    n = len(data)
    status, h, body = served.request(CHUNK)
    assert (status, body, h["Accept-Ranges"]) == (200, data, "bytes")
    for rng, want, content_range in [
        ("bytes=0-99", data[:100], f"bytes 0-99/{n}"),
        ("bytes=0-0", data[:1], f"bytes 0-0/{n}"),
        ("bytes=100-", data[100:], f"bytes 100-{n - 1}/{n}"),
        ("bytes=-50", data[-50:], f"bytes {n - 50}-{n - 1}/{n}"),
        (f"bytes=10-{n + 1000}", data[10:], f"bytes 10-{n - 1}/{n}"),
        (f"bytes=-{n + 5}", data, f"bytes 0-{n - 1}/{n}"),
    ]:
        status, h, body = served.request(CHUNK, headers={"Range": rng})
        assert (status, body, h["Content-Range"]) == (206, want, content_range), rng
        assert int(h["Content-Length"]) == len(want)
    for rng in (f"bytes={n}-", f"bytes={n + 10}-{n + 20}", "bytes=-0"):
        status, h, body = served.request(CHUNK, headers={"Range": rng})
        assert (status, h["Content-Range"]) == (416, f"bytes */{n}"), rng
    for ignored in ("bytes=5-2", "bytes=0-1,4-5", "items=0-5", "bytes=x-y"):
        status, _, body = served.request(CHUNK, headers={"Range": ignored})
        assert (status, body) == (200, data), ignored
    etag = served.request(CHUNK)[1]["ETag"]
    assert served.request(CHUNK, headers={"Range": "bytes=0-9", "If-Range": etag})[0] == 206
    status, _, body = served.request(CHUNK, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (status, body) == (200, data)
    # a range of JSON is a range of the file itself, never of a gzip encoding
    meta = (repo / EXP[1:] / "zarr.json").read_bytes()
    status, h, body = served.request(
        f"{EXP}/zarr.json", headers={"Range": "bytes=0-9", "Accept-Encoding": "gzip"}
    )
    assert (status, body, h.get("Content-Encoding")) == (206, meta[:10], None)


def test_head_has_every_header_and_no_body(served, repo):
    n = (repo / CHUNK[1:]).stat().st_size
    _, get_h, _ = served.request(CHUNK)
    status, h, body = served.request(CHUNK, "HEAD")
    assert (status, body, int(h["Content-Length"])) == (200, b"", n)
    for name in ("ETag", "Last-Modified", "Cache-Control", "Accept-Ranges", "Content-Type"):
        assert h[name] == get_h[name]
    status, h, body = served.request(CHUNK, "HEAD", headers={"Range": "bytes=0-99"})
    assert (status, body, h["Content-Length"], h["Content-Range"]) == (
        206, b"", "100", f"bytes 0-99/{n}"
    )  # fmt: skip


def test_validators_conditional_requests_and_caching_headers(served):
    status, h, body = served.request(CHUNK)
    etag, modified = h["ETag"], h["Last-Modified"]
    assert h["Cache-Control"] == "public, max-age=31536000, immutable"
    assert etag.startswith('"') and modified.endswith("GMT")
    status, h304, body = served.request(CHUNK, headers={"If-None-Match": etag})
    assert (status, body, h304["ETag"]) == (304, b"", etag)
    assert h304["Cache-Control"] == "public, max-age=31536000, immutable"
    assert served.request(CHUNK, headers={"If-None-Match": f'"x", W/{etag}'})[0] == 304
    assert served.request(CHUNK, headers={"If-None-Match": '"other"'})[0] == 200
    assert served.request(CHUNK, headers={"If-Modified-Since": modified})[0] == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert served.request(CHUNK, headers={"If-Modified-Since": old})[0] == 200
    assert served.request(CHUNK, headers={"If-Match": '"other"'})[0] == 412
    assert served.request(CHUNK, headers={"If-Unmodified-Since": old})[0] == 412
    # listings change: no-cache, but an ETag so that a poll costs a 304
    status, h, _ = served.request("/api/exposures")
    assert (status, h["Cache-Control"]) == (200, "no-cache")
    status, _, body = served.request("/api/exposures", headers={"If-None-Match": h["ETag"]})
    assert (status, body) == (304, b"")


def test_only_a_complete_exposures_chunks_are_immutable(repo, tmp_path):
    """Metadata documents are revalidated (no-cache, a 304 when unchanged); the chunks of an
    exposure still filling (``cvt watch`` replaces its root and overview chunks) are too, until
    its root says it is complete."""
    import shutil

    filling = tmp_path / "repo"
    shutil.copytree(repo / EXP[1:], filling / EXP[1:], symlinks=True)
    root = filling / EXP[1:] / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"]["cvt"]["complete"] = False
    root.write_text(json.dumps(doc))
    s = Served(filling, tmp_path / "serve.log")
    try:
        for path in (f"{EXP}/zarr.json", CHUNK):
            status, h, _ = s.request(path)
            assert (status, h["Cache-Control"]) == (200, "no-cache"), path
        doc["attributes"]["cvt"]["complete"] = True
        tmp = root.with_name(".zarr.json.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, root)  # published as cvt watch does: the root replaced at once
        assert s.request(CHUNK)[1]["Cache-Control"] == "public, max-age=31536000, immutable"
        assert s.request(f"{EXP}/zarr.json")[1]["Cache-Control"] == "no-cache"
    finally:
        s.stop(signal.SIGTERM)


def test_gzip_for_json_metadata_when_accepted(served, repo):
    meta = (repo / EXP[1:] / "zarr.json").read_bytes()
    status, h, body = served.request(f"{EXP}/zarr.json", headers={"Accept-Encoding": "gzip"})
    assert (status, h["Content-Encoding"], h["Vary"]) == (200, "gzip", "Accept-Encoding")
    assert gzip.decompress(body) == meta and len(body) < len(meta) / 4
    status, h, body = served.request(f"{EXP}/zarr.json")
    assert (status, body, h.get("Content-Encoding")) == (200, meta, None)
    status, h, _ = served.request(f"{EXP}/zarr.json", headers={"Accept-Encoding": "gzip;q=0"})
    assert h.get("Content-Encoding") is None
    _, h, _ = served.request(CHUNK, headers={"Accept-Encoding": "gzip"})
    assert h.get("Content-Encoding") is None  # chunks are compressed already
    _, h, body = served.request("/api/exposures", headers={"Accept-Encoding": "gzip"})
    assert h["Content-Encoding"] == "gzip" and json.loads(gzip.decompress(body))["exposures"]


# ---------------------------------------------------------------------------------------------
# Listing and events


def test_listing_and_latest(served, repo):
    status, _, body = served.request("/api/exposures")
    (entry,) = json.loads(body)["exposures"]  # not the hidden partial, not OUT.zarr (outside)
    local = open_exposure(repo / f"{OBSID}.zarr")
    assert entry["obsid"] == OBSID and entry["path"] == f"{OBSID}.zarr/"
    assert entry["image_type"] == local.attrs["image_type"] == "BIAS"
    assert entry["exposure_time"] == local.attrs["exposure_time"]
    assert entry["date_obs"] == local.attrs["date_obs"] and entry["mjd"] == local.attrs["mjd"]
    assert entry["complete"] is True and entry["n_detectors"] == 2
    assert entry["health"] == health_counts(local.table("metrics"))
    assert entry["health"]["amps"] == 32
    status, _, body = served.request("/api/latest")
    assert status == 200 and json.loads(body) == entry


def test_the_catalog_is_served_as_a_consistent_snapshot(served, repo, tmp_path):
    from core import catalog

    status, headers, body = served.request("/catalog.sqlite")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    assert served.request("/catalog.sqlite", headers={"If-None-Match": headers["ETag"]})[0] == 304
    with catalog.open_catalog(served.url) as remote_cat, catalog.open_catalog(repo) as local_cat:
        assert remote_cat.exposures() == local_cat.exposures()
        assert [r["obsid"] for r in remote_cat.exposures()] == [OBSID]


def test_an_event_announces_each_new_exposure(obs_lsst, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    s = Served(repo, tmp_path / "serve.log")
    conn = None
    try:
        assert s.request("/api/latest")[0] == 404
        conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
        conn.request("GET", "/api/events")
        r = conn.getresponse()
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        while r.fp.readline().strip() != b": connected":
            pass
        hidden = repo / ".XX_C_20990101_000001.zarr.partial-abcd"  # never announced
        hidden.mkdir()
        (hidden / "zarr.json").write_text("{}")
        ingest([obs_lsst / "raw" / ONE], repo, workers=1)
        event = {}
        while "data" not in event:
            line = r.fp.readline().decode().rstrip("\n")
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                event[key] = value
        assert event["event"] == "exposure" and event["id"] == ONE_OBSID
        assert json.loads(event["data"])["obsid"] == ONE_OBSID
        assert json.loads(event["data"])["n_detectors"] == 1
        assert json.loads(s.request("/api/latest")[2])["obsid"] == ONE_OBSID
    finally:
        t = time.perf_counter()
        code, out = s.stop(signal.SIGTERM)  # with the event stream still open
        if conn is not None:
            conn.close()
    assert code == 0 and "stopped" in out
    assert time.perf_counter() - t < 5


# ---------------------------------------------------------------------------------------------
# Security


REFUSED_TARGETS = [
    b"/../../../../etc/passwd",
    b"/etc/passwd",
    EXP.encode() + b"/../../outside/secret.txt",
    EXP.encode() + b"/../" + EXP[1:].encode() + b"/zarr.json",  # '..' even when it stays inside
    b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/%2E%2E/outside/secret.txt",
    EXP.encode() + b"/%2e%2e/%2e%2e/outside/secret.txt",
    EXP.encode() + b"%2f..%2f..%2foutside%2fsecret.txt",
    EXP.encode() + b"/..%2f..%2foutside%2fsecret.txt",
    EXP.encode() + b"/%252e%252e/%252e%252e/outside/secret.txt",  # double encoding
    EXP.encode() + b"/..%5c..%5coutside%5csecret.txt",
    EXP.encode() + b"\\..\\..\\outside\\secret.txt",
    b"//etc/passwd",
    b"///outside/secret.txt",
    EXP.encode() + b"//zarr.json",
    EXP.encode() + b"/./zarr.json",
    b"/%00",
    EXP.encode() + b"/zarr.json%00.png",
    b"http://127.0.0.1/../../outside/secret.txt",  # absolute-form target
    b"/" + quote(str(Path("/etc/passwd"))).encode(),
    EXP.encode() + b"/leak.json",  # a symlink to a file outside
    EXP.encode() + b"/detectors/leakdir/secret.txt",  # a symlinked folder outside
    b"/OUT.zarr/zarr.json",  # a whole "exposure" that is a symlink outside
    b"/OUT.zarr/secret.txt",
    f"/.{ONE_OBSID}.zarr.partial-1234/zarr.json".encode(),  # a hidden partial exposure
    f"/%2e{ONE_OBSID}.zarr.partial-1234/zarr.json".encode(),
    EXP.encode() + b"/.hidden",
    b"/notes.txt",  # not in an exposure
    b"/api/../notes.txt",
    EXP.encode() + b"/detectors",  # a folder
]


@pytest.mark.parametrize("target", REFUSED_TARGETS, ids=lambda t: t.decode("latin-1"))
def test_paths_outside_published_exposures_are_refused(served, target):
    status, response = served.raw(target)
    assert status in (400, 403, 404), response[:200]
    assert SECRET not in response and b"root:" not in response


def test_a_nul_byte_in_the_request_line_is_refused(served):
    status, response = served.raw(EXP.encode() + b"/zarr.json\x00/../../outside/secret.txt")
    assert status == 400 and SECRET not in response


def test_every_url_the_server_serves_resolves_inside_the_repository(served, repo):
    """Walk everything reachable from the repository folder, symlinks followed (so also what
    lies outside), ask for each one, and check each answer against the rule."""
    root = repo.resolve()
    repository = Repository(repo)
    conn = http.client.HTTPConnection(served.host, served.port, timeout=20)
    served_ok, refused = [], []
    for folder, _dirs, files in os.walk(repo, followlinks=True):
        for name in files:
            rel = (Path(folder) / name).relative_to(repo)
            path = "/" + "/".join(quote(p) for p in rel.parts)
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if path == "/catalog.sqlite":  # the one file outside the exposures: a snapshot
                assert r.status == 200 and body.startswith(b"SQLite format 3\x00")
                continue
            real = (repo / rel).resolve()
            real_rel = real.relative_to(root).parts if real.is_relative_to(root) else None
            allowed = (
                not any(p.startswith(".") for p in rel.parts)
                and rel.parts[0].endswith(".zarr")
                and real_rel is not None
                and real_rel[0].endswith(".zarr")
                and not any(p.startswith(".") for p in real_rel)
            )
            if r.status == 200:
                assert allowed, path
                assert real.is_relative_to(root) and body == real.read_bytes()
                assert repository.resolve(path) == real
                served_ok.append(path)
            else:
                assert not allowed and r.status in (400, 403, 404), (path, r.status)
                assert SECRET not in body
                with pytest.raises(Refused):
                    repository.resolve(path)
                refused.append(path)
    conn.close()
    published = {
        "/" + p.relative_to(repo).as_posix()
        for p in (repo / EXP[1:]).rglob("*")
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
    }
    assert published <= set(served_ok)  # every file of the exposure is served
    assert f"{EXP}/alias.json" in served_ok  # a symlink that stays inside is fine
    assert len(refused) >= 7  # leak.json, leakdir/*, OUT.zarr/*, the partial, .hidden, notes


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_every_write_method_is_refused(served, repo, method):
    target = repo / EXP[1:] / "zarr.json"
    before = target.read_bytes()
    status, h, _ = served.request(f"{EXP}/zarr.json", method, body=b"overwritten")
    assert status == 405 and h["Allow"] == "GET, HEAD"
    status, h, _ = served.request(f"{EXP}/new-file.bin", method, body=b"x")
    assert status == 405 and h["Allow"] == "GET, HEAD"
    assert target.read_bytes() == before and not (repo / EXP[1:] / "new-file.bin").exists()


def test_token_is_required_when_configured(repo, tmp_path):
    token = "tok-" + os.urandom(12).hex()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    s = Served(repo, tmp_path / "serve.log", "--token-file", str(token_file))
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                        {"Authorization": f"Bearer {token}x"}, {"Authorization": "Bearer "}):  # fmt: skip
            status, h, body = s.request(CHUNK, headers=headers)
            assert status == 401 and h["WWW-Authenticate"].startswith("Bearer"), headers
        assert s.request("/api/exposures?token=wrong")[0] == 401
        assert s.request(CHUNK, "PUT", headers={"Authorization": f"Bearer {token}"})[0] == 405
        assert s.request(CHUNK, headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert s.request(f"/api/exposures?token={token}")[0] == 200  # EventSource clients
        exp = open_exposure(s.url + f"{OBSID}.zarr", storage_options={"token": token})
        assert exp.detector_names == ["R10_S02", "R22_S21"]
    finally:
        code, out = s.stop(signal.SIGINT)
    assert code == 0 and "stopped" in out and "token required" in s.banner
    log = (tmp_path / "serve.log").read_text()
    assert "/api/exposures 200" in log and token not in log  # the query is never logged


def test_one_access_log_line_per_request(served):
    served.request(CHUNK, headers={"Range": "bytes=0-99"})
    served.request(f"{EXP}/no-such-file")
    time.sleep(0.2)
    log = served.log.read_text()
    assert re.search(rf"127\.0\.0\.1 GET {re.escape(CHUNK)} 206 100 \d+\.\dms", log)
    assert re.search(rf"GET {re.escape(EXP)}/no-such-file 404 \d+ \d+\.\dms", log)
