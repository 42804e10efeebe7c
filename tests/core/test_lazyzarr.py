"""The lazy consolidated reader gives what zarr-python gives, without parsing every node."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from core.lazyzarr import LazyGroup, open_group
from core.zarrio import Writer
from tests.threads import beats_while


@pytest.fixture
def store_path(tmp_path):
    w = Writer(str(tmp_path / "x.zarr"))
    w.group("", {"cvt": {"obsid": "X"}})
    w.group("detectors")
    w.group("detectors/A", {"cvt": {"name": "A"}})
    w.array("detectors/A/0", np.arange(1000 * 700, dtype=np.int32).reshape(1000, 700), (512, 512))
    w.array("detectors/A/1", np.linspace(0, 1, 77, dtype=np.float32))
    w.consolidate({"cvt": {"obsid": "X", "complete": True}})
    return tmp_path / "x.zarr"


def test_same_nodes_and_data_as_zarr(store_path):
    store = zarr.storage.LocalStore(str(store_path), read_only=True)
    lazy = open_group(store)
    eager = zarr.open_group(store, mode="r", use_consolidated=True)
    assert isinstance(lazy, LazyGroup)
    assert lazy.attrs.asdict() == eager.attrs.asdict()
    assert lazy.keys() == ["detectors"]
    det = lazy["detectors/A"]
    assert det.attrs["cvt"] == {"name": "A"}
    assert det.keys() == ["0", "1"]
    assert "0" in det and "2" not in det
    np.testing.assert_array_equal(
        det["0"][300:700, 100:600], eager["detectors/A/0"][300:700, 100:600]
    )
    np.testing.assert_array_equal(lazy["detectors"]["A/1"][:], eager["detectors/A/1"][:])
    assert det["0"] is det["0"]  # made once
    with pytest.raises(KeyError, match="detectors/B"):
        lazy["detectors/B"]


class CountingStore(zarr.storage.LocalStore):
    """A local store that counts the keys it is asked for."""

    def __init__(self, root):
        super().__init__(str(root), read_only=True)
        self.asked: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.asked.append(key)
        return await super().get(key, prototype, byte_range)


def test_a_node_missing_from_the_consolidated_metadata_is_read_from_its_own(store_path):
    """Written after the consolidation, or left out of it: one more read (its ``zarr.json``),
    not a KeyError; a node in neither place is still a KeyError naming it."""
    import json

    root = json.loads((store_path / "zarr.json").read_text())
    nodes = root["consolidated_metadata"]["metadata"]
    del nodes["detectors/A"], nodes["detectors/A/0"]
    (store_path / "zarr.json").write_text(json.dumps(root))
    store = CountingStore(store_path)
    lazy = open_group(store)
    assert isinstance(lazy, LazyGroup) and store.asked == ["zarr.json"]
    det = lazy["detectors/A"]
    assert det.attrs["cvt"] == {"name": "A"}
    assert store.asked == ["zarr.json", "detectors/A/zarr.json"]
    level0 = det["0"]
    assert store.asked[-1] == "detectors/A/0/zarr.json" and len(store.asked) == 3
    eager = zarr.open_group(str(store_path), mode="r", use_consolidated=False)
    np.testing.assert_array_equal(level0[:], eager["detectors/A/0"][:])
    np.testing.assert_array_equal(det["1"][:], eager["detectors/A/1"][:])  # consolidated still
    assert det["0"] is level0  # made once
    assert [k for k in store.asked if k.endswith("zarr.json")] == [
        "zarr.json", "detectors/A/zarr.json", "detectors/A/0/zarr.json"
    ]  # fmt: skip
    with pytest.raises(KeyError, match=r"detectors/B.*neither in the consolidated"):
        lazy["detectors/B"]
    (store_path / "detectors/A/0/zarr.json").write_text('{"zarr_format": 3, "node_ty')
    with pytest.raises(ValueError, match=r"detectors/A/0/zarr\.json is not valid JSON"):
        open_group(store)["detectors/A/0"]


def test_without_consolidated_metadata_falls_back_to_zarr(tmp_path):
    w = Writer(str(tmp_path / "y.zarr"))
    w.group("", {"a": 1})
    w.array("v", np.arange(5))
    g = open_group(zarr.storage.LocalStore(str(tmp_path / "y.zarr"), read_only=True))
    assert isinstance(g, zarr.Group)
    assert g["v"][:].tolist() == [0, 1, 2, 3, 4]


def test_missing_root_is_an_error(tmp_path):
    (tmp_path / "z.zarr").mkdir()
    with pytest.raises(FileNotFoundError):
        open_group(zarr.storage.LocalStore(str(tmp_path / "z.zarr"), read_only=True))


def test_root_parse_lets_other_threads_run(store_path):
    """The root document is the same as ``json.loads`` gives, parsed in steps that hand the
    interpreter lock over (a 2 MB document parsed in one C call stalled the GUI thread)."""
    import json

    from core.lazyzarr import read_root

    store = zarr.storage.LocalStore(str(store_path), read_only=True)
    assert read_root(store) == json.loads((store_path / "zarr.json").read_text())
    big = {f"n{i}": {"node_type": "array", "shape": [i, 2], "attributes": {"k": [1, 2]}}
           for i in range(60_000)}  # fmt: skip
    text = json.dumps({"node_type": "group", "consolidated_metadata": {"metadata": big}})
    (store_path / "zarr.json").write_text(text)
    stepwise = beats_while(lambda: read_root(store))
    one_call = beats_while(lambda: json.loads(text))
    # json.loads holds the lock for the whole document: this thread hardly runs meanwhile;
    # the stepwise parse lets it run again and again (counts, not times: noise-proof)
    print(f"beats: stepwise {stepwise}, one call {one_call}")
    assert stepwise > 5 and stepwise > 3 * one_call, (stepwise, one_call)


# ---------------------------------------------------------------------------------------------
# read_chunk: one chunk without zarr's event loop


def test_every_chunk_reads_as_zarr_reads_it(store_path):
    """Inner and edge chunks (clipped to the shape), integer and float, 2-D and 1-D."""
    from core.lazyzarr import read_chunk

    store = zarr.storage.LocalStore(str(store_path), read_only=True)
    lazy, eager = open_group(store), zarr.open_group(store, mode="r")
    for name, grid in (
        ("detectors/A/0", [(0, 0), (0, 1), (1, 0), (1, 1)]),
        ("detectors/A/1", [(0,)]),
    ):
        arr, want = lazy[name], eager[name]
        for index in grid:
            region = tuple(
                slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, want.chunks, want.shape)
            )
            got = read_chunk(arr, index)
            assert got.dtype == want.dtype and got.shape == want[region].shape
            np.testing.assert_array_equal(got, want[region])


def test_a_missing_chunk_is_none_and_a_damaged_one_an_error_naming_it(store_path):
    from core.lazyzarr import CorruptChunk, read_chunk

    (store_path / "detectors/A/0/c/1/1").unlink()
    chunk = store_path / "detectors/A/0/c/0/1"
    frame = chunk.read_bytes()
    chunk.write_bytes(frame[:-100])
    arr = open_group(zarr.storage.LocalStore(str(store_path), read_only=True))["detectors/A/0"]
    assert read_chunk(arr, (1, 1)) is None
    with pytest.raises(CorruptChunk, match=r"0/c/0/1.*truncated"):
        read_chunk(arr, (0, 1))
    # a whole header, the rest zeroed: it does not decode
    chunk.write_bytes(frame[:16] + bytes(len(frame) - 16))
    with pytest.raises(CorruptChunk, match="0/c/0/1: cannot be decoded"):
        read_chunk(arr, (0, 1))
    assert read_chunk(arr, (0, 0)).shape == (512, 512)


def test_other_codecs_go_through_zarr_and_unwritten_chunks_are_none(tmp_path):
    """An array written by zarr-python with another compressor (and its all-fill chunks left
    out, as zarr does) reads the same, with the unwritten chunk told apart from data."""
    from core.lazyzarr import read_chunk

    root = zarr.open_group(str(tmp_path / "o.zarr"), mode="w")
    a = root.create_array("a", shape=(600, 300), chunks=(256, 256), dtype="f4", fill_value=np.nan,
                          compressors=zarr.codecs.ZstdCodec(level=1))  # fmt: skip
    values = np.random.default_rng(1).normal(size=(600, 300)).astype("f4")
    values[256:512, :256] = np.nan  # chunk (1, 0): all fill, not stored
    a[:] = values
    arr = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["a"]
    np.testing.assert_array_equal(read_chunk(arr, (2, 1)), values[512:, 256:])
    assert read_chunk(arr, (1, 0)) is None
