"""Open a zarr v3 hierarchy from its consolidated metadata, building nodes only when asked.

zarr-python parses every node of the consolidated metadata when a group opens: about 0.3 ms a
node, so ~1 s for a 205-detector exposure (~2900 nodes), before anything can be drawn. Here the
root document is fetched once (one request) and parsed as plain JSON; an array or group object
is made from its metadata the first time it is used, with no further request.
"""

from __future__ import annotations

import json

import zarr
from zarr.core.array import Array, AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.storage._common import StorePath


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
            raise KeyError(f"{full!r} is not in the consolidated metadata")
        if doc["node_type"] == "array":
            meta = ArrayV3Metadata.from_dict(dict(doc))
            node = Array(AsyncArray(metadata=meta, store_path=StorePath(self.store, full)))
        else:
            node = LazyGroup(self.store, full, self._nodes, doc.get("attributes", {}))
        self._cache[full] = node
        return node

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
