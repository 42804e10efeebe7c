"""Open a zarr v3 hierarchy from its consolidated metadata, building nodes only when asked;
read one chunk without zarr's event loop.

zarr-python parses every node of the consolidated metadata when a group opens: about 0.3 ms a
node, so ~1 s for a 205-detector exposure (~2900 nodes), before anything can be drawn. Here the
root document is fetched once (one request) and parsed as plain JSON; an array or group object
is made from its metadata the first time it is used, with no further request.
"""

from __future__ import annotations

import json
import math
import os

import numcodecs.blosc
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.core.array import Array, AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.storage import LocalStore
from zarr.storage._common import StorePath


class CorruptChunk(ValueError):
    """A chunk that was read whole but does not decode (a truncated or damaged blosc frame, a
    wrong length): the stored bytes are wrong, so reading them again gives the same. A reader
    that retries failures retries the link's, not these."""


class Attributes(dict):
    """A node's attributes (read-only by convention), with zarr's ``asdict``."""

    def asdict(self) -> dict:
        return dict(self)


class LazyGroup:
    """The parts of ``zarr.Group`` the readers use: ``attrs``, ``[path]``, ``in``, ``keys``."""

    def __init__(self, store, path: str, nodes: dict[str, dict], attributes: dict):
        self.store = store
        self.path = path
        self._nodes = nodes
        self.attrs = Attributes(attributes)
        self._cache: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"LazyGroup({self.path or '/'})"

    def _full(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.path}/{key}" if self.path else key

    def __contains__(self, key: str) -> bool:
        return self._full(key) in self._nodes

    def __getitem__(self, key: str):
        full = self._full(key)
        node = self._cache.get(full)
        if node is not None:
            return node
        doc = self._nodes.get(full)
        if doc is None:
            doc = self._own_metadata(full)
        if doc["node_type"] == "array":
            meta = ArrayV3Metadata.from_dict(dict(doc))
            node = Array(AsyncArray(metadata=meta, store_path=StorePath(self.store, full)))
        else:
            node = LazyGroup(self.store, full, self._nodes, doc.get("attributes", {}))
        self._cache[full] = node
        return node

    def _own_metadata(self, full: str) -> dict:
        """A node the consolidated metadata lacks (written after it, or left out): its own
        ``zarr.json``, one more read."""
        buf = sync(self.store.get(f"{full}/zarr.json", prototype=default_buffer_prototype()))
        if buf is None:
            raise KeyError(f"{full!r} is neither in the consolidated metadata nor in the store")
        try:
            doc = json.loads(buf.to_bytes())
        except ValueError as exc:
            raise ValueError(f"{full}/zarr.json is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("node_type") not in ("array", "group"):
            raise ValueError(f"{full}/zarr.json is not a zarr v3 node")
        return doc

    def keys(self) -> list[str]:
        prefix = f"{self.path}/" if self.path else ""
        return sorted(
            {
                k[len(prefix) :].split("/")[0]
                for k in self._nodes
                if k.startswith(prefix) and k != self.path
            }
        )


def _pairs(pairs: list) -> dict:
    return dict(pairs)


def read_root(store) -> dict:
    """The root ``zarr.json`` of a store as a dict (one request).

    Parsed with a Python-level object hook: ``json.loads`` alone is one C call that holds the
    interpreter lock throughout (45 ms for the 2 MB of a 205-detector exposure, a stall of the
    viewer's GUI thread at each open); the hook's bytecode lets other threads in every few
    milliseconds (the same dicts, ~10 % slower)."""
    buf = sync(store.get("zarr.json", prototype=default_buffer_prototype()))
    if buf is None:
        raise FileNotFoundError("no zarr.json at the root")
    return json.loads(buf.to_bytes(), object_pairs_hook=_pairs)


def open_group(store) -> LazyGroup | zarr.Group:
    """The root group: lazy when the root carries consolidated metadata, else zarr's own."""
    doc = read_root(store)
    if doc.get("node_type") != "group":
        raise ValueError("the root is not a zarr group")
    consolidated = doc.get("consolidated_metadata") or {}
    nodes = consolidated.get("metadata")
    if nodes is None:
        return zarr.open_group(store, mode="r", use_consolidated=False)
    return LazyGroup(store, "", nodes, doc.get("attributes", {}))


# ---------------------------------------------------------------------------------------------
# Reading one chunk


def blosc_frame_ok(data: bytes, expected_nbytes: int | None = None) -> str | None:
    """None when ``data`` is a complete blosc frame, else what is wrong. The 16-byte header
    carries the compressed size (``cbytes``) and the decoded size (``nbytes``)."""
    if len(data) < 16:
        return f"{len(data)} bytes, shorter than a blosc header"
    nbytes = int.from_bytes(data[4:8], "little")
    cbytes = int.from_bytes(data[12:16], "little")
    if cbytes != len(data):
        return f"{len(data)} bytes where the blosc header says {cbytes} (truncated)"
    if expected_nbytes is not None and nbytes != expected_nbytes:
        return (
            f"blosc header says {nbytes} bytes decoded where the array's chunk is {expected_nbytes}"
        )
    return None


def _blosc_or_plain(arr) -> bool:
    """Whether ``arr``'s chunks are stored as ``core.zarrio`` writes them: little-endian bytes,
    then blosc or nothing (so a chunk is one blosc frame, or the raw bytes)."""
    codecs = getattr(arr.metadata, "codecs", ())
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return False
    if getattr(codecs[0].endian, "value", codecs[0].endian) not in (None, "little"):
        return False
    return all(isinstance(c, BloscCodec) for c in codecs[1:]) and len(codecs) <= 2


def read_chunk(arr: Array, index: tuple[int, ...]) -> np.ndarray | None:
    """Chunk ``index`` of ``arr``, clipped to the array's shape, or None when the store has no
    such chunk (zarr itself would return the fill value, indistinguishable from data); a chunk
    read whole that does not decode raises ``CorruptChunk`` naming its key.

    zarr-python reads one chunk through its event loop and codec pipeline: ~1.6 ms of Python a
    chunk, holding the interpreter lock that the viewer's GUI thread then queues for. The arrays
    ``core.zarrio`` writes (bytes, then blosc) are read here with one file read (or one request
    to the store, with its retries and checks) and a blosc decode, which lets go of the lock:
    0.25 ms. Other arrays go through zarr, their absence checked with one more request."""
    chunks = tuple(arr.chunks)
    region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, arr.shape))
    key = arr.metadata.encode_chunk_key(tuple(index))
    full_key = f"{arr.path}/{key}" if arr.path else key
    store = arr.store_path.store
    if not _blosc_or_plain(arr):
        data = np.asarray(arr[region])
        fill = arr.fill_value
        nan_fill = data.dtype.kind == "f" and np.isnan(fill)
        blank = np.isnan(data).all() if nan_fill else np.all(data == fill)
        if blank and not sync(store.exists(full_key)):
            return None  # all fill: stored so, or not stored
        return data
    if isinstance(store, LocalStore):
        try:
            with open(os.path.join(store.root, full_key), "rb") as f:
                frame = f.read()
        except FileNotFoundError:
            return None
    else:
        buf = sync(store.get(full_key, prototype=default_buffer_prototype()))
        if buf is None:
            return None
        frame = buf.to_bytes()
    dtype = np.dtype(arr.dtype).newbyteorder("<")
    expected = math.prod(chunks) * dtype.itemsize
    if len(arr.metadata.codecs) == 2:
        problem = blosc_frame_ok(frame, expected)
        if problem:
            raise CorruptChunk(f"chunk {full_key}: {problem}")
        try:
            raw = numcodecs.blosc.decompress(frame)
        except Exception as exc:  # a damaged frame behind a whole header
            raise CorruptChunk(f"chunk {full_key}: cannot be decoded ({exc})") from exc
    elif len(frame) != expected:
        raise CorruptChunk(f"chunk {full_key}: {len(frame)} bytes where {expected} are expected")
    else:
        raw = frame
    data = np.frombuffer(raw, dtype=dtype).reshape(chunks)
    return data[tuple(slice(0, r.stop - r.start) for r in region)]
