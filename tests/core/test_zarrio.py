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
