"""core.zarrio: what the direct chunk writer puts on disk is standard zarr v3 (read back by
zarr-python), with the shuffle chosen by the data type."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from core.zarrio import Writer


@pytest.mark.parametrize(
    ("dtype", "shuffle"),
    [(np.int32, "shuffle"), (np.uint8, "shuffle"), (np.float32, "bitshuffle")],
)
def test_arrays_read_back_with_zarr_python(tmp_path, dtype, shuffle):
    rng = np.random.default_rng(3)
    data = (rng.normal(1000, 30, size=(1100, 700))).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        data[5:9, 600:] = np.nan  # NaN survives, and the padded edge chunks read as the data
    w = Writer(str(tmp_path / "s.zarr"))
    w.group("")
    w.array("a", data, chunks=(512, 512))
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "a"), mode="r")
    assert arr.dtype == dtype and arr.chunks == (512, 512)
    np.testing.assert_array_equal(arr[:], data)
    blosc = arr.metadata.to_dict()["codecs"][-1]
    assert blosc["name"] == "blosc"
    assert blosc["configuration"]["shuffle"] == shuffle
    assert blosc["configuration"]["typesize"] == np.dtype(dtype).itemsize
    # a folder per chunk row and a file per chunk (3 x 2)
    assert len(list((tmp_path / "s.zarr" / "a" / "c").rglob("*"))) == 3 + 3 * 2


def test_consolidated_root_is_json_dumps_of_the_document_and_follows_new_nodes(tmp_path):
    """The root keeps each node's JSON between calls (the watcher rewrites it ~once a second):
    the bytes are still ``json.dumps`` of the whole document, zarr-python opens it consolidated,
    and a node written again (a new document) or added shows up in the next root."""
    import json

    from core.zarrio import group_metadata

    root = tmp_path / "s.zarr"
    w = Writer(str(root))
    w.group("b")
    w.array("b/x", np.arange(6, dtype=np.int32))
    w.array("a", np.zeros((3, 2), dtype=np.float32), attributes={"note": 'é"\\ \n'})

    def expected(attrs):
        doc = group_metadata(attrs)
        doc["consolidated_metadata"] = {
            "kind": "inline",
            "must_understand": False,
            "metadata": dict(sorted(w.nodes.items())),
        }
        return json.dumps(doc).encode()

    w.consolidate({"step": 1})
    assert (root / "zarr.json").read_bytes() == expected({"step": 1})
    w.array("b/x", np.arange(10, dtype=np.int32))  # the same node again, another shape
    w.array("c", np.ones(4, dtype=np.uint8))
    w.consolidate({"step": 2})
    assert (root / "zarr.json").read_bytes() == expected({"step": 2})
    g = zarr.open_group(str(root), mode="r", use_consolidated=True)
    assert g.attrs["step"] == 2
    assert g["b/x"].shape == (10,) and g["c"].shape == (4,)
    assert g["a"].attrs["note"] == 'é"\\ \n'


def test_cvt_bench_store_measures_the_codecs_the_store_uses():
    """The first codec of each row of ``cvt bench store`` is the store's own, so the table
    the README quotes stays the comparison it claims to be; and the table is of real encodes."""
    import numpy as np

    from core.bench.chunks import CODECS, codec_table
    from core.zarrio import DEFAULT_CODEC

    for dtype in ("int32", "float32"):
        _, cname, clevel, shuffle = CODECS[dtype][0]
        assert (cname, clevel, shuffle) == (
            DEFAULT_CODEC.cname,
            DEFAULT_CODEC.clevel,
            DEFAULT_CODEC.shuffle(dtype),
        )
    rng = np.random.default_rng(0)
    levels = [rng.normal(900, 5, (600, 700)).astype(np.int32), rng.normal(0, 5, (300, 350))]
    levels[1] = levels[1].astype(np.float32)
    rows = codec_table(levels, repeat=1)
    assert len(rows) == len(CODECS["int32"]) + len(CODECS["float32"])
    noshuffle = next(r for r in rows if r["codec"] == "lz4 5 no shuffle")
    assert rows[0]["ratio"] < 0.75 * noshuffle["ratio"]  # the shuffle is what compresses
