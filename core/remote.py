"""Exposures from any fsspec URL: HTTP(S) (``cvt serve`` or any static server), S3, others.

One small store class, ``RemoteStore``, wraps zarr's ``FsspecStore`` for every remote protocol
and adds what a high-latency link needs:

- retries with exponential backoff (and jitter) on 5xx, 408/429, dropped connections, timeouts
  and bodies that do not add up;
- a check that each response is whole before zarr sees it: a ``zarr.json`` must parse, a blosc
  chunk must be exactly as long as its own header says (the Content-Length check is aiohttp's).
  A short chunk is an error naming its URL, never pixels;
- a persistent on-disk chunk cache bounded in bytes (least recently used out first). Published
  exposures are written once, so a chunk fetched once stays valid; the cache is keyed by the
  exposure's URL and the digest of its root ``zarr.json`` (fetched on every open: one request),
  so an exposure replaced with ``--replace`` gets a fresh namespace;
- HTTP connections tuned for latency: up to 32 at once, kept alive.

The exposure format is zarr v3 with consolidated metadata: the store answers zarr v2 keys
(``.zgroup`` ...) itself, so opening an exposure is one request.

Configuration: ``configure(...)`` for the process, or the environment: ``CVT_CACHE_DIR``
(default ``~/.cache/cvt/chunks``), ``CVT_CACHE_BYTES`` (default 2 GiB; 0: no disk cache),
``CVT_TOKEN`` (bearer token for ``cvt serve --token-file``), and for S3 the standard AWS
variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` ...) or ``storage_options``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import fsspec
import numpy as np
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, WrapperStore

from core.lazyzarr import CorruptChunk, blosc_frame_ok
from core.paths import user_cache_dir

V2_KEYS = (".zgroup", ".zattrs", ".zarray", ".zmetadata")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteError(OSError):
    """A remote read that failed for good; the message names the URL and why."""


class CorruptResponse(RemoteError, CorruptChunk):
    """A response that is not what it claims to be (short chunk, broken JSON). Raised to the
    caller when every attempt got one: then the stored data is wrong, not the link, and like a
    local ``CorruptChunk`` it is not worth retrying."""


def default_cache_dir() -> Path:
    return user_cache_dir("chunks")


@dataclass(frozen=True)
class RemoteSettings:
    """How remote reads behave. ``attempts`` counts the first try; the wait before retry ``n``
    is ``backoff * 2**n`` (at most ``backoff_max``), times a random 0.5 .. 1."""

    attempts: int = 8
    backoff: float = 0.05
    backoff_max: float = 2.0
    connections: int = 32
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    cache_bytes: int = 2 << 30

    @classmethod
    def from_env(cls) -> RemoteSettings:
        kw: dict = {}
        if os.environ.get("CVT_CACHE_DIR"):
            kw["cache_dir"] = Path(os.environ["CVT_CACHE_DIR"])
        if os.environ.get("CVT_CACHE_BYTES"):
            kw["cache_bytes"] = int(float(os.environ["CVT_CACHE_BYTES"]))
        return cls(**kw)


_settings: RemoteSettings | None = None
_settings_lock = threading.Lock()


def settings() -> RemoteSettings:
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = RemoteSettings.from_env()
        return _settings


def configure(**changes) -> RemoteSettings:
    """Change the process-wide settings (``configure(cache_bytes=0)`` turns the disk cache off);
    returns the previous ones, so ``configure(**dataclasses.asdict(old))`` restores them."""
    global _settings
    old = settings()
    with _settings_lock:
        _settings = dataclasses.replace(old, **changes)
    return old


def restore(old: RemoteSettings) -> None:
    global _settings
    with _settings_lock:
        _settings = old


# ---------------------------------------------------------------------------------------------
# The on-disk chunk cache


class ChunkCache:
    """Content-addressed files under ``root``, at most ``max_bytes`` in all, least recently used
    evicted first (a hit refreshes the file's mtime). Safe across threads and processes: files
    are written under a temporary name and renamed; a file gone missing is just a miss."""

    def __init__(self, root: str | os.PathLike, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes on disk, counted on first use

    def path(self, namespace: str, key: str) -> Path:
        h = hashlib.sha256(f"{namespace}\0{key}".encode()).hexdigest()
        return self.root / h[:2] / h[2:]

    def get(self, namespace: str, key: str) -> bytes | None:
        p = self.path(namespace, key)
        try:
            data = p.read_bytes()
            os.utime(p)
        except OSError:
            return None
        return data

    def discard(self, namespace: str, key: str) -> None:
        p = self.path(namespace, key)
        try:
            size = p.stat().st_size
            p.unlink()
        except OSError:
            return
        with self._lock:
            if self._total is not None:
                self._total -= size

    def put(self, namespace: str, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:  # one entry may not flush most of the cache
            return
        p = self.path(namespace, key)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, p)
        except OSError:
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if self._total is None:
                self._total = self._scan_total()
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._evict()

    def nbytes(self) -> int:
        with self._lock:
            self._total = self._scan_total()
            return self._total

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        if not self.root.is_dir():
            return out
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for e in os.scandir(sub.path):
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, Path(e.path)))
        return out

    def _scan_total(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        """Down to 90 % of the bound, oldest first (the whole directory is the truth: other
        processes share it)."""
        entries = sorted(self._entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        goal = int(self.max_bytes * 0.9)
        for _, size, p in entries:
            if total <= goal:
                break
            try:
                p.unlink()
            except OSError:
                continue
            total -= size
        self._total = total


_caches: dict[tuple[str, int], ChunkCache] = {}


def chunk_cache(s: RemoteSettings | None = None) -> ChunkCache | None:
    """The process's cache for these settings (None when disabled)."""
    s = s or settings()
    if not s.cache_dir or s.cache_bytes <= 0:
        return None
    key = (str(s.cache_dir), s.cache_bytes)
    with _settings_lock:
        if key not in _caches:
            _caches[key] = ChunkCache(s.cache_dir, s.cache_bytes)
        return _caches[key]


# ---------------------------------------------------------------------------------------------
# Checks that a response is whole


@dataclass
class Stats:
    """What a store did over the network (for the bench, the viewer's status line)."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


# ---------------------------------------------------------------------------------------------
# The store


class RemoteStore(WrapperStore[FsspecStore]):
    """A read-only zarr store over any fsspec filesystem, with retries, response checks and the
    disk chunk cache. ``url`` names the store's root in error messages and in the cache key."""

    def __init__(
        self,
        store: FsspecStore,
        url: str | None = None,
        remote: RemoteSettings | None = None,
        cache: ChunkCache | bool | None = True,
    ):
        super().__init__(store)
        self.url = (url or str(store.path)).rstrip("/")
        self.remote = remote or settings()
        self.cache = chunk_cache(self.remote) if cache is True else (cache or None)
        self.stats = Stats()
        self._namespace: str | None = None
        self._chunk_nbytes: dict[str, int | None] = {}  # array path -> decoded chunk size

    def _with_store(self, store: FsspecStore) -> RemoteStore:
        return type(self)(store, self.url, self.remote, self.cache or False)

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    def key_url(self, key: str) -> str:
        return f"{self.url}/{key}"

    # -- the root document: namespace of the cache, and what each array's chunks look like

    def _learn_root(self, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._namespace = hashlib.sha256(f"{self.url}\0{digest}".encode()).hexdigest()
        try:
            nodes = json.loads(data).get("consolidated_metadata", {}).get("metadata", {})
        except (ValueError, AttributeError):
            nodes = {}
        for path, doc in nodes.items():
            if not isinstance(doc, dict) or doc.get("node_type") != "array":
                continue
            codecs = doc.get("codecs") or []
            if not codecs or codecs[-1].get("name") != "blosc":
                self._chunk_nbytes[path] = None
                continue
            try:
                shape = doc["chunk_grid"]["configuration"]["chunk_shape"]
                itemsize = np.dtype(doc["data_type"]).itemsize
                self._chunk_nbytes[path] = math.prod(shape) * itemsize
            except (KeyError, TypeError, ValueError):  # not a fixed-size numpy type
                self._chunk_nbytes[path] = None

    def _check(self, key: str, data: bytes) -> None:
        if key.rsplit("/", 1)[-1] == "zarr.json":
            try:
                json.loads(data)
            except ValueError as exc:
                raise CorruptResponse(
                    f"{self.key_url(key)}: not valid JSON ({len(data)} bytes: truncated?)"
                ) from exc
            return
        if key.startswith("c/"):
            array = ""
        elif "/c/" in key:
            array = key.split("/c/", 1)[0]
        else:
            return
        if array not in self._chunk_nbytes:
            return
        nbytes = self._chunk_nbytes[array]
        if nbytes is None:
            return
        problem = blosc_frame_ok(data, nbytes)
        if problem:
            raise CorruptResponse(f"{self.key_url(key)}: corrupt chunk: {problem}")

    # -- reads

    async def _fetch(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None
    ) -> Buffer | None:
        s = self.remote
        last: BaseException | None = None
        corrupt_only = True  # every attempt got a body that is not what it claims to be
        for attempt in range(max(1, s.attempts)):
            if attempt:
                self.stats.add(retries=1)
                wait = min(s.backoff_max, s.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(wait * (0.5 + 0.5 * random.random()))
            try:
                self.stats.add(requests=1)
                buf = await self._store.get(key, prototype, byte_range)
                if buf is not None:
                    data = buf.to_bytes()
                    self.stats.add(bytes=len(data))
                    if byte_range is None:
                        self._check(key, data)
                return buf
            except CorruptResponse as exc:
                last = exc
                continue
            except aiohttp.ClientResponseError as exc:
                if exc.status not in RETRY_STATUS:
                    hint = ""
                    if exc.status in (401, 403):
                        hint = " (a token: storage_options={'token': ...} or CVT_TOKEN)"
                    raise RemoteError(
                        f"{self.key_url(key)}: HTTP {exc.status} {exc.message}{hint}"
                    ) from exc
                last = exc
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                last = exc
            except (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise
            except OSError as exc:  # s3fs and others turn their errors into OSError
                last = exc
            corrupt_only = False
        # corrupt for good only if the link never failed otherwise: a flaky link whose last
        # attempt happened to be cut short is the link's fault, worth a retry later
        if corrupt_only and isinstance(last, CorruptResponse):
            raise CorruptResponse(f"{last} (after {s.attempts} attempts)") from last
        raise RemoteError(
            f"{self.key_url(key)}: {s.attempts} attempts failed; last: "
            f"{type(last).__name__}: {last}"
        ) from last

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key.rsplit("/", 1)[-1] in V2_KEYS:
            return None  # the exposure format is zarr v3: never ask the network for v2 keys
        is_root = key == "zarr.json"
        cache = self.cache if (byte_range is None and not is_root) else None
        if cache is not None and self._namespace is None:
            await self.get("zarr.json", prototype)  # the cache key needs the root document
        ns = self._namespace
        if cache is not None and ns is not None:
            data = await asyncio.to_thread(cache.get, ns, key)
            if data is not None:
                try:
                    self._check(key, data)
                    self.stats.add(cache_hits=1)
                    return prototype.buffer.from_bytes(data)
                except CorruptResponse:
                    await asyncio.to_thread(cache.discard, ns, key)
        buf = await self._fetch(key, prototype, byte_range)
        if buf is None:
            return None
        if is_root and byte_range is None:
            self._learn_root(buf.to_bytes())
        elif cache is not None and ns is not None:
            await asyncio.to_thread(cache.put, ns, key, buf.to_bytes())
        return buf

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


# ---------------------------------------------------------------------------------------------
# Building stores and listing repositories


def _http_client_factory(s: RemoteSettings):
    async def get_client(loop=None, **kwargs) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=s.connections,
            limit_per_host=s.connections,
            keepalive_timeout=60,
            ttl_dns_cache=300,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=s.connect_timeout, sock_read=s.read_timeout
        )
        return aiohttp.ClientSession(connector=connector, timeout=timeout, **kwargs)

    return get_client


def _http_options(storage_options: dict | None) -> dict:
    """fsspec HTTP options from ours: ``token`` (or ``CVT_TOKEN``) becomes a bearer header."""
    opts = dict(storage_options or {})
    token = opts.pop("token", None) or os.environ.get("CVT_TOKEN")
    if token:
        headers = dict(opts.pop("headers", None) or {})
        headers.setdefault("Authorization", f"Bearer {token}")
        opts["headers"] = headers
    return opts


_http_pool: dict[str, object] = {}
_http_pool_lock = threading.Lock()


def http_filesystem(
    storage_options: dict | None = None,
    asynchronous: bool = True,
    remote: RemoteSettings | None = None,
):
    """fsspec's HTTP filesystem with our connection pool and timeouts. The asynchronous ones
    (zarr's) are shared per options, so every exposure opened from one server reuses the same
    kept-alive connections; they are closed at exit. The options (a token among them) never go
    into fsspec's own instance cache."""
    from fsspec.implementations.http import HTTPFileSystem

    remote = remote or settings()
    opts = _http_options(storage_options)

    def make():
        return HTTPFileSystem(
            asynchronous=asynchronous,
            get_client=_http_client_factory(remote),
            skip_instance_cache=True,
            **opts,
        )

    if not asynchronous:
        return make()
    key = json.dumps(
        [opts, remote.connections, remote.connect_timeout, remote.read_timeout],
        sort_keys=True,
        default=str,
    )
    with _http_pool_lock:
        if key not in _http_pool:
            if not _http_pool:
                atexit.register(_close_http_pool)
            _http_pool[key] = make()
        return _http_pool[key]


def _close_http_pool() -> None:
    from zarr.core.sync import _get_loop

    with _http_pool_lock:
        filesystems = list(_http_pool.values())
        _http_pool.clear()
    for fs in filesystems:
        session = getattr(fs, "_session", None)
        if session is None:
            continue
        # at exit, a connection that will not close is not worth a traceback
        with contextlib.suppress(Exception):
            type(fs).close_session(_get_loop(), session)


def open_store(
    url: str,
    storage_options: dict | None = None,
    remote: RemoteSettings | None = None,
    cache: ChunkCache | bool | None = True,
) -> RemoteStore:
    """A read-only zarr store for an exposure at ``url`` (http, https, s3, any fsspec URL)."""
    url = url.rstrip("/")
    remote = remote or settings()
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("http", "https"):
        fs = http_filesystem(storage_options, True, remote)
        inner = FsspecStore(fs, path=url, read_only=True)
    else:
        inner = FsspecStore.from_url(url, storage_options=storage_options, read_only=True)
    return RemoteStore(inner, url, remote, cache)


def _retrying(what: str, fn, remote: RemoteSettings | None = None):
    s = remote or settings()
    last: BaseException | None = None
    for attempt in range(max(1, s.attempts)):
        if attempt:
            time.sleep(min(s.backoff_max, s.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1))
        try:
            return fn()
        except aiohttp.ClientResponseError as exc:
            if exc.status not in RETRY_STATUS:
                raise RemoteError(f"{what}: HTTP {exc.status} {exc.message}") from exc
            last = exc
        except (FileNotFoundError, PermissionError):
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            last = exc
    raise RemoteError(f"{what}: {s.attempts} attempts failed; last: {last}") from last


def _exposure_names(entries: Iterable[str]) -> list[str]:
    names = set()
    for entry in entries:
        base = entry.rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(".zarr") and not base.startswith("."):
            names.add(base[: -len(".zarr")])
    return sorted(names)


def list_exposures(repo: str, storage_options: dict | None = None) -> list[str]:
    """The published exposures of a remote repository. HTTP: ``cvt serve``'s listing
    (``/api/exposures``), else the links of the server's HTML index; others: ``ls``."""
    repo = repo.rstrip("/")
    protocol = repo.split("://", 1)[0].lower()
    if protocol in ("http", "https"):
        fs = http_filesystem(storage_options, asynchronous=False)
        api = f"{repo}/api/exposures"
        try:
            doc = _retrying(api, lambda: json.loads(fs.cat_file(api)))
            return sorted(e["obsid"] for e in doc["exposures"])
        except FileNotFoundError:
            pass
        return _exposure_names(_retrying(repo, lambda: fs.ls(repo + "/", detail=False)))
    fs, root = fsspec.core.url_to_fs(repo, **(storage_options or {}))
    return _exposure_names(_retrying(repo, lambda: fs.ls(root, detail=False)))
