"""``cvt serve``: a read-only HTTP server of a repository of exposures (aiohttp).

Routes (GET and HEAD only; every other method is 405 with ``Allow: GET, HEAD``):

- ``/<OBSID>.zarr/<path>``  a file of a published exposure: single Range requests (206, 416),
  ETag and Last-Modified with conditional requests (304, 412), ``Cache-Control: public,
  max-age=31536000, immutable`` for the chunks of a complete exposure (written once) and
  ``no-cache`` for every ``zarr.json`` and anything of an exposure still filling, gzip for JSON
  when accepted.
- ``/api/exposures``  the listing (JSON): OBSID, time, image type, exposure time, complete,
  detectors, health counts of the metrics table; ``no-cache`` with an ETag.
- ``/api/latest``  the most recent exposure by observation time.
- ``/api/events``  server-sent events: ``event: exposure`` when a new ``<OBSID>.zarr`` appears.
- ``/catalog.sqlite``  the repository's catalog (``core.catalog``): a consistent snapshot made
  with SQLite's backup API (never a copy caught mid-write), ``no-cache`` with an ETag; 404 when
  the repository has none. ``core.catalog.open_catalog(URL)`` and the viewer's trend dock read it.
- ``/``  an HTML index of the exposures (for generic fsspec HTTP listing).

Security, checked on every request: an optional bearer token (header, or ``?token=`` for
EventSource clients; constant-time comparison); the path, raw as sent, is refused when it holds
``..``, ``.``, empty segments (``//``: absolute paths), NUL, backslashes, any percent-encoded
separator, dot or percent (``%2f``, ``%2e``, ``%25``, ``%00``) or a name outside a conservative
character set; hidden names (``.<OBSID>.zarr.partial-*``) are never served; then the path is
resolved (symlinks followed) and must still be a file inside a published exposure of the
repository; the file is opened without following a last symlink and the opened descriptor is
checked once more. Writes are impossible: there is no handler that writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger("cvt.serve")

ALLOWED_METHODS = ("GET", "HEAD")
IMMUTABLE = "public, max-age=31536000, immutable"
SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-+=~]*")
ENCODED_FORBIDDEN = ("%2f", "%5c", "%2e", "%25", "%00")
STREAM_PIECE = 1 << 20
MAX_SUBSCRIBERS = 256  # event streams at once
GZIP_MIN = 256  # bytes: below this, gzip saves less than it costs


class Refused(Exception):
    """A request path the server will not serve: ``status`` and a short reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# The repository: what is published and which file a URL path names


class Repository:
    """A folder of ``<OBSID>.zarr`` exposures; the one place that maps URL paths to files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: not a folder")
        self._summaries: dict[str, tuple[tuple, dict]] = {}
        self._lock = threading.Lock()

    def exposures(self) -> list[str]:
        """OBSIDs of the published exposures (hidden partial folders are not published; an
        exposure folder that is a symlink out of the repository is not either)."""
        names = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.endswith(".zarr") or len(e.name) <= 5:
                    continue
                if not SEGMENT.fullmatch(e.name):
                    continue
                try:
                    if not e.is_dir():
                        continue
                    if e.is_symlink() and not self._inside(Path(e.path).resolve(strict=True)):
                        continue
                except OSError:
                    continue
                names.append(e.name[: -len(".zarr")])
        return sorted(names)

    def _inside(self, real: Path) -> bool:
        """``real`` (resolved) is a file path inside a published exposure of the repository."""
        try:
            rel = real.relative_to(self.root)
        except ValueError:
            return False
        parts = rel.parts
        return (
            len(parts) >= 1
            and parts[0].endswith(".zarr")
            and not any(p.startswith(".") for p in parts)
        )

    def resolve(self, raw_path: str) -> Path:
        """The real file a raw URL path (as sent, percent-encoded, no query) names, or
        ``Refused``. Decodes once, after refusing every encoded form of a separator or dot."""
        if "\x00" in raw_path or "\\" in raw_path:
            raise Refused(400, "NUL or backslash in the path")
        low = raw_path.lower()
        if any(code in low for code in ENCODED_FORBIDDEN):
            raise Refused(400, "encoded separator, dot or percent in the path")
        path = unquote(raw_path, errors="strict")
        if "\x00" in path or "%" in path or "\\" in path:
            raise Refused(400, "bad characters in the path")
        if not path.startswith("/") or path.startswith("//"):
            raise Refused(400, "not a relative path")
        parts = path[1:].split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise Refused(400, "empty, '.' or '..' segment")
        if any(p.startswith(".") for p in parts):
            raise Refused(404, "hidden")
        if not all(SEGMENT.fullmatch(p) for p in parts):
            raise Refused(400, "unexpected characters in the path")
        if len(parts) < 2 or not parts[0].endswith(".zarr"):
            raise Refused(404, "not a file of an exposure")
        try:
            real = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # missing, a symlink loop, too long ...
            raise Refused(404, "no such file") from exc
        if not self._inside(real):
            raise Refused(403, "outside the repository's published exposures")
        return real

    def open(self, real: Path) -> tuple[int, os.stat_result]:
        """An open descriptor of a file ``resolve`` returned, checked again after opening (a
        folder swapped for a symlink in between is caught here)."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise Refused(404, "no such file") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(404, "not a file")
            proc = f"/proc/self/fd/{fd}"
            if os.path.exists(proc) and not self._inside(Path(os.readlink(proc))):
                raise Refused(403, "outside the repository's published exposures")
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def cache_control(self, real: Path) -> str:
        """``immutable`` for the chunks of a complete exposure (written once); ``no-cache``
        (revalidate with the ETag: a 304 when nothing changed) for every ``zarr.json`` and for
        anything in an exposure still filling (``cvt watch`` replaces its root and overview
        chunks as CCDs arrive), so no cache keeps a stale copy."""
        rel = real.relative_to(self.root)
        if real.name == "zarr.json" or not rel.parts or not rel.parts[0].endswith(".zarr"):
            return "no-cache"
        summary = self.summary(rel.parts[0][: -len(".zarr")])  # cached on the root's stat
        return IMMUTABLE if summary and summary.get("complete") is True else "no-cache"

    # -- what the listing says of each exposure (cached: exposures are written once)

    def summary(self, obsid: str) -> dict | None:
        folder = self.root / f"{obsid}.zarr"
        try:
            st = (folder / "zarr.json").stat()
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._summaries.get(obsid)
        if hit and hit[0] == key:
            return hit[1]
        doc = exposure_summary(folder)
        with self._lock:
            self._summaries[obsid] = (key, doc)
        return doc

    def listing(self) -> list[dict]:
        names = self.exposures()
        out = [s for s in (self.summary(n) for n in names) if s is not None]
        with self._lock:
            for gone in set(self._summaries) - set(names):
                del self._summaries[gone]
        return out


def exposure_summary(folder: Path) -> dict:
    """One listing entry, read with ``core.exposure`` (the consolidated metadata and the
    metrics table only)."""
    from core.exposure import open_exposure

    obsid = folder.name[: -len(".zarr")]
    entry: dict = {"obsid": obsid, "path": f"{folder.name}/"}
    try:
        exp = open_exposure(folder)
    except Exception as exc:  # a broken store is listed as such, it does not break the listing
        entry["error"] = str(exc)
        return entry
    a = exp.attrs
    entry.update(
        {
            "obsid": a.get("obsid", obsid),
            "camera": a.get("camera"),
            "instrument": a.get("instrument"),
            "dayobs": a.get("dayobs"),
            "seqnum": a.get("seqnum"),
            "date_obs": a.get("date_obs"),
            "mjd": a.get("mjd"),
            "image_type": a.get("image_type"),
            "exposure_time": a.get("exposure_time"),
            "filter": a.get("filter"),
            "complete": bool(a.get("complete")),
            "n_detectors": len(a.get("detectors", [])),
            "detectors_expected": a.get("detectors_expected"),
            "failures": len(a.get("failures", [])),
            "written": a.get("written"),
            "health": None,
        }
    )
    try:
        table = exp.table("metrics")
    except Exception as exc:
        entry["health"] = {"error": str(exc)}
        return entry
    if table:
        entry["health"] = health_counts(table)
    return entry


def health_counts(table: dict) -> dict:
    """Counts over the amps of a metrics table: all amps, dead ones, and each value of a
    ``health`` (or ``status``) column when the table has one."""
    n = len(next(iter(table.values()))) if table else 0
    out: dict = {"amps": int(n)}
    if "dead" in table:
        dead = table["dead"]
        out["dead"] = int(sum(1 for v in dead if v == v and v > 0.5))
    for col in ("health", "status"):
        if col in table:
            counts: dict[str, int] = {}
            for v in table[col]:
                counts[str(v)] = counts.get(str(v), 0) + 1
            out[col] = dict(sorted(counts.items()))
            break
    return out


def latest(entries: list[dict]) -> dict | None:
    """The most recent exposure by observation time (MJD), then by OBSID."""
    ok = [e for e in entries if "error" not in e]
    if not ok:
        return None
    return max(
        ok, key=lambda e: (e.get("mjd") if e.get("mjd") is not None else -math.inf, e["obsid"])
    )


# ---------------------------------------------------------------------------------------------
# HTTP details: ranges, validators, content coding


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """A single ``bytes=`` range as ``(start, end)`` inclusive; ``"unsatisfiable"``; or None
    when the header is to be ignored (malformed or several ranges: the whole file is sent)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if a:
        start = int(a)
        if b and int(b) < start:
            return None
        if start >= size:
            return "unsatisfiable"
        end = min(int(b), size - 1) if b else size - 1
        return start, end
    n = int(b)
    if n == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - n), size - 1


def accepts_gzip(header: str | None) -> bool:
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def _etag_list(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def _weak_eq(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _parse_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def precondition(request: web.Request, etag: str, mtime: float) -> int | None:
    """304 or 412 when the request's conditions say so (RFC 9110 order), else None."""
    h = request.headers
    if "If-Match" in h:
        tags = _etag_list(h["If-Match"])
        if "*" not in tags and not any(t == etag and not t.startswith("W/") for t in tags):
            return 412
    elif "If-Unmodified-Since" in h:
        since = _parse_date(h["If-Unmodified-Since"])
        if since is not None and int(mtime) > since:
            return 412
    if "If-None-Match" in h:
        tags = _etag_list(h["If-None-Match"])
        if "*" in tags or any(_weak_eq(t, etag) for t in tags):
            return 304
    elif "If-Modified-Since" in h:
        since = _parse_date(h["If-Modified-Since"])
        if since is not None and int(mtime) <= since:
            return 304
    return None


class GzipCache:
    """Gzipped bodies of immutable JSON files, least recently used out, bounded in bytes."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()
        with self._lock:
            if key not in self._items and len(data) <= self.max_bytes // 8:
                self._items[key] = data
                self._total += len(data)
                while self._total > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._total -= len(old)
        return data


# ---------------------------------------------------------------------------------------------
# Test and bench only: latency and failures on purpose


@dataclass
class Faults:
    """Injected trouble (hidden ``--inject-latency-ms`` / ``--inject-faults``, or the
    ``CVT_SERVE_LATENCY_MS`` / ``CVT_SERVE_FAULTS`` variables): a delay before every response,
    and for file requests a fraction of failures of each kind: ``500``, ``drop`` (connection
    closed, no response), ``truncate`` (honest Content-Length, body cut, connection closed),
    ``short`` (a cut body with a Content-Length that matches it: only the content can tell)."""

    latency_ms: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    match: Callable[[str], bool] | None = None  # which file paths (default: all)
    rng: random.Random = field(init=False, repr=False)

    KINDS = ("500", "drop", "truncate", "short")

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for k in self.rates:
            if k not in self.KINDS:
                raise ValueError(f"unknown fault {k!r}; expected one of {', '.join(self.KINDS)}")

    @classmethod
    def parse(cls, latency_ms: float = 0.0, spec: str | None = None, seed: int = 0) -> Faults:
        """``spec``: ``0.2`` (each kind a quarter of 20 %) or ``500:0.05,short:0.1``."""
        rates: dict[str, float] = {}
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            if ":" in item:
                k, v = item.split(":", 1)
                rates[k.strip()] = float(v)
            else:
                rates.update({k: float(item) / len(cls.KINDS) for k in cls.KINDS})
        return cls(latency_ms=latency_ms, rates=rates, seed=seed)

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or any(v > 0 for v in self.rates.values())

    def pick(self, path: str) -> str | None:
        if not self.rates or (self.match is not None and not self.match(path)):
            return None
        x = self.rng.random()
        for kind, rate in self.rates.items():
            if x < rate:
                return kind
            x -= rate
        return None


# ---------------------------------------------------------------------------------------------
# New exposures: a poll of the folder, pushed to every server-sent-events client


class Watcher:
    """Polls the repository every ``interval`` seconds; each subscriber's queue receives the
    OBSID of every exposure published after it subscribed (None: the server is stopping)."""

    def __init__(self, repo: Repository, interval: float = 0.5):
        self.repo = repo
        self.interval = interval
        self.subscribers: set[asyncio.Queue] = set()
        self.known: set[str] | None = None

    async def run(self) -> None:
        while True:
            try:
                now = set(await asyncio.to_thread(self.repo.exposures))
            except OSError as exc:
                log.warning("cannot list %s: %s", self.repo.root, exc)
                now = self.known or set()
            if self.known is not None:
                for obsid in sorted(now - self.known):
                    for q in list(self.subscribers):
                        q.put_nowait(obsid)
            self.known = now
            await asyncio.sleep(self.interval)

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subscribers.discard(q)

    def close(self) -> None:
        for q in list(self.subscribers):
            q.put_nowait(None)


# ---------------------------------------------------------------------------------------------
# The application


@dataclass
class ServerStats:
    """Requests, body bytes and the most requests in flight at once (tests, the bench)."""

    requests: int = 0
    bytes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.max_in_flight = self.in_flight
        self.by_path = {}


REPO: web.AppKey[Repository] = web.AppKey("repo", Repository)
TOKEN: web.AppKey[str | None] = web.AppKey("token", object)  # type: ignore[arg-type]
FAULTS: web.AppKey[Faults] = web.AppKey("faults", Faults)
WATCHER: web.AppKey[Watcher] = web.AppKey("watcher", Watcher)
STATS: web.AppKey[ServerStats] = web.AppKey("stats", ServerStats)
GZIP: web.AppKey[GzipCache] = web.AppKey("gzip", GzipCache)


def _raw_path(request: web.Request) -> str:
    return request.raw_path.split("?", 1)[0].split("#", 1)[0]


def _token_ok(request: web.Request, token: str) -> bool:
    given = None
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        given = value.strip()
    else:
        query = request.raw_path.partition("?")[2]
        values = parse_qs(query).get("token") if query else None
        if values:
            given = values[-1]
    if given is None:
        return False
    # equal-length digests: the comparison time says nothing about the token's length
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256(token.encode()).digest()
    return hmac.compare_digest(a, b)


@web.middleware
async def security_middleware(request: web.Request, handler):
    if request.method not in ALLOWED_METHODS:
        return web.Response(
            status=405, text="read-only: GET and HEAD only\n", headers={"Allow": "GET, HEAD"}
        )
    token = request.app[TOKEN]
    if token is not None and not _token_ok(request, token):
        return web.Response(
            status=401,
            text="a token is needed\n",
            headers={"WWW-Authenticate": 'Bearer realm="cvt"'},
        )
    return await handler(request)


@web.middleware
async def fault_middleware(request: web.Request, handler):
    faults = request.app[FAULTS]
    path = _raw_path(request)
    if faults.latency_ms > 0 and path != "/api/events":
        await asyncio.sleep(faults.latency_ms / 1000)
    kind = None if path.startswith("/api/") or path == "/" else faults.pick(path)
    if kind == "500":
        return web.Response(status=500, text="injected failure\n")
    if kind == "drop":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing is answered
    response = await handler(request)
    if kind in ("truncate", "short") and isinstance(response, web.Response) and response.body:
        body = bytes(response.body)
        cut = body[: len(body) // 2]
        if kind == "short":
            response.body = cut
            return response
        stream = web.StreamResponse(status=response.status, headers=response.headers)
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(cut)
        if request.transport is not None:
            request.transport.abort()
        return stream
    return response


@web.middleware
async def stats_middleware(request: web.Request, handler):
    stats = request.app[STATS]
    path = _raw_path(request)
    stats.requests += 1
    stats.by_path[path] = stats.by_path.get(path, 0) + 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        response = await handler(request)
    finally:
        stats.in_flight -= 1
    if isinstance(response, web.Response) and response.body is not None:
        stats.bytes += len(response.body) if request.method != "HEAD" else 0
    return response


def _json_response(request: web.Request, doc) -> web.Response:
    """A listing: ``no-cache`` (it changes), with an ETag so a poll costs a 304."""
    body = json.dumps(doc, indent=1).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag, "Vary": "Accept-Encoding"}
    inm = request.headers.get("If-None-Match")
    if inm and any(_weak_eq(t, etag) or t == "*" for t in _etag_list(inm)):
        return web.Response(status=304, headers=headers)
    if accepts_gzip(request.headers.get("Accept-Encoding")) and len(body) >= GZIP_MIN:
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, content_type="application/json", headers=headers)


async def api_exposures(request: web.Request) -> web.Response:
    repo = request.app[REPO]
    entries = await asyncio.to_thread(repo.listing)
    return _json_response(request, {"exposures": entries})


async def api_latest(request: web.Request) -> web.Response:
    repo = request.app[REPO]
    entry = latest(await asyncio.to_thread(repo.listing))
    if entry is None:
        return web.json_response(
            {"error": "no exposure yet"}, status=404, headers={"Cache-Control": "no-cache"}
        )
    return _json_response(request, entry)


async def api_events(request: web.Request) -> web.StreamResponse:
    watcher = request.app[WATCHER]
    repo = request.app[REPO]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    if len(watcher.subscribers) >= MAX_SUBSCRIBERS:
        return web.Response(
            status=503, text="too many event streams\n", headers={"Retry-After": "5"}
        )
    queue = watcher.subscribe()
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        while True:
            try:
                obsid = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if obsid is None:
                break
            entry = await asyncio.to_thread(repo.summary, obsid) or {"obsid": obsid}
            data = json.dumps(entry)
            await response.write(f"event: exposure\nid: {obsid}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        watcher.unsubscribe(queue)
    return response


def catalog_snapshot(root: Path) -> bytes | None:
    """The repository's catalog as one consistent SQLite file (None when there is none)."""
    import sqlite3

    path = root / "catalog.sqlite"
    if not path.is_file():
        return None
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    mem = sqlite3.connect(":memory:")
    try:
        src.backup(mem)
        return mem.serialize()
    finally:
        src.close()
        mem.close()


async def api_catalog(request: web.Request) -> web.Response:
    repo = request.app[REPO]
    data = await asyncio.to_thread(catalog_snapshot, repo.root)
    if data is None:
        return web.Response(status=404, text="no catalog in this repository\n")
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    inm = request.headers.get("If-None-Match")
    if inm and any(_weak_eq(t, etag) or t == "*" for t in _etag_list(inm)):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="application/vnd.sqlite3", headers=headers)


async def index(request: web.Request) -> web.Response:
    repo = request.app[REPO]
    names = await asyncio.to_thread(repo.exposures)
    links = "\n".join(f'<li><a href="{n}.zarr/">{n}.zarr/</a></li>' for n in names)
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>CVT repository</title></head>"
        f"<body><h1>Exposures</h1><ul>\n{links}\n</ul>"
        '<p>JSON: <a href="api/exposures">api/exposures</a></p></body></html>\n'
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def serve_file(request: web.Request) -> web.StreamResponse:
    repo = request.app[REPO]
    try:
        real = repo.resolve(_raw_path(request))
        fd, st = await asyncio.to_thread(repo.open, real)
    except Refused as exc:
        return web.Response(status=exc.status, text=f"{exc.reason}\n")
    try:
        cache_control = await asyncio.to_thread(repo.cache_control, real)
        return await _send(request, fd, st, real, cache_control)
    finally:
        os.close(fd)


async def _send(
    request: web.Request, fd: int, st: os.stat_result, real: Path, cache_control: str = IMMUTABLE
):
    size = st.st_size
    mtime = st.st_mtime
    base_tag = f"{st.st_ino:x}-{st.st_mtime_ns:x}-{size:x}"
    range_header = request.headers.get("Range")
    json_file = real.suffix == ".json"
    use_gzip = (
        json_file
        and range_header is None
        and size >= GZIP_MIN
        and accepts_gzip(request.headers.get("Accept-Encoding"))
    )
    etag = f'"{base_tag}-gz"' if use_gzip else f'"{base_tag}"'
    headers = {
        "ETag": etag,
        "Last-Modified": _http_date(mtime),
        "Cache-Control": cache_control,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/json" if json_file else "application/octet-stream",
    }
    if json_file:
        headers["Vary"] = "Accept-Encoding"
    status = precondition(request, etag, mtime)
    if status is not None:
        if status == 412:
            return web.Response(status=412, headers={"ETag": etag})
        headers.pop("Content-Type")
        return web.Response(status=304, headers=headers)

    if use_gzip:
        gz = request.app[GZIP]
        body = await asyncio.to_thread(
            gz.get,
            (str(real), base_tag),
            lambda: gzip.compress(_pread(fd, size, 0), compresslevel=6, mtime=0),
        )
        headers["Content-Encoding"] = "gzip"
        return _body_response(request, 200, headers, body)

    start, end, status = 0, size - 1, 200
    if range_header is not None:
        if_range = request.headers.get("If-Range")
        honour = True
        if if_range:
            if if_range.startswith(('"', "W/")):
                honour = if_range == etag
            else:
                when = _parse_date(if_range)
                honour = when is not None and int(mtime) == int(when)
        wanted = parse_range(range_header, size) if honour else None
        if wanted == "unsatisfiable":
            return web.Response(
                status=416, headers={"Content-Range": f"bytes */{size}", "ETag": etag}
            )
        if wanted is not None:
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = max(0, end - start + 1)
    if length <= STREAM_PIECE:
        data = await asyncio.to_thread(_pread, fd, length, start) if length else b""
        return _body_response(request, status, headers, data)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    if request.method != "HEAD":
        pos = start
        while pos <= end:
            n = min(STREAM_PIECE, end + 1 - pos)
            piece = await asyncio.to_thread(_pread, fd, n, pos)
            if not piece:
                break
            await response.write(piece)
            pos += len(piece)
            request.app[STATS].bytes += len(piece)
    await response.write_eof()
    return response


def _pread(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        piece = os.pread(fd, n - len(out), offset + len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def _body_response(request: web.Request, status: int, headers: dict, body: bytes):
    # for HEAD, aiohttp sends the headers of this body (its Content-Length) and not the body
    return web.Response(status=status, headers=headers, body=body)


class AccessLog(AbstractAccessLogger):
    """One line per request: client, method, path (no query: it may hold a token), status,
    bytes, milliseconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        peer = request.remote or "-"
        path = request.raw_path.split("?", 1)[0]
        sent = 0
        if request.method != "HEAD" and response.status != 304:
            sent = response.content_length
            if sent is None:  # streamed (events): what went out, headers included
                sent = response.body_length
        self.logger.info(
            "%s %s %s %d %d %.1fms", peer, request.method, path, response.status, sent, time * 1000
        )


async def _watcher_ctx(app: web.Application):
    task = asyncio.create_task(app[WATCHER].run())
    warm = asyncio.create_task(asyncio.to_thread(app[REPO].listing))  # first listing is ready
    yield
    task.cancel()
    warm.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _on_shutdown(app: web.Application) -> None:
    app[WATCHER].close()


def make_app(
    repo: str | os.PathLike,
    token: str | None = None,
    faults: Faults | None = None,
    poll_interval: float = 0.5,
) -> web.Application:
    """The application serving ``repo`` (read-only), optionally behind a bearer ``token``."""
    if token is not None and not token:
        raise ValueError("an empty token")
    repository = Repository(repo)
    faults = faults or Faults()
    middlewares = [stats_middleware, security_middleware]
    if faults.active:
        middlewares.append(fault_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=1024)
    app[REPO] = repository
    app[TOKEN] = token
    app[FAULTS] = faults
    app[WATCHER] = Watcher(repository, poll_interval)
    app[STATS] = ServerStats()
    app[GZIP] = GzipCache()
    app.router.add_get("/api/exposures", api_exposures)
    app.router.add_get("/api/latest", api_latest)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/catalog.sqlite", api_catalog)
    app.router.add_get("/", index)
    app.router.add_get("/{tail:.+}", serve_file)
    app.cleanup_ctx.append(_watcher_ctx)
    app.on_shutdown.append(_on_shutdown)
    return app


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def start(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 3.0
) -> tuple[web.AppRunner, str]:
    """Start serving ``app``; returns the runner (``await runner.cleanup()`` stops) and URL."""
    runner = web.AppRunner(
        app, access_log_class=AccessLog, access_log=log, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0]
    return runner, url_for(host, bound[1])


class BackgroundServer:
    """The application on its own event loop in a thread (tests, the bench): ``with
    BackgroundServer(app) as url: ...``."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.host = host
        self.port = port
        self.url: str | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> str:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            start(self.app, self.host, self.port, shutdown_timeout=1.0), self.loop
        )
        self._runner, self.url = fut.result(timeout=30)
        return self.url

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def serve_forever(
    app: web.Application,
    host: str,
    port: int,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (event streams are closed first)."""
    import signal

    async def main() -> None:
        runner, url = await start(app, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        announce(url)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
