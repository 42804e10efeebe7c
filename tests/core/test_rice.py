"""Our RICE_1 decoder against astropy (cfitsio's encoder) on every kind of block."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from core.rice import RiceDecodeError, decode_rice_hdu, image_header


def compressed_hdu(pixels: np.ndarray, tile=None, blocksize=None):
    """(table header, data bytes) of a RICE_1 compressed HDU written by astropy."""
    kw = {"compression_type": "RICE_1", "tile_shape": tile or (1, pixels.shape[1])}
    hdu = fits.CompImageHDU(pixels, **kw)
    if blocksize:
        hdu.header["ZVAL1"] = blocksize
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    raw = fits.open(io.BytesIO(buf.getvalue()), disable_image_compression=True)[1]
    header = raw.header
    start = raw._data_offset
    return header, buf.getvalue()[start : start + raw._data_size]


CASES = {
    "noise": lambda rng: rng.normal(25000, 5, (64, 576)),
    "constant": lambda rng: np.full((8, 576), 27026),
    "zeros": lambda rng: np.zeros((8, 40)),
    "high entropy": lambda rng: rng.integers(-(2**31), 2**31 - 1, (8, 576), dtype=np.int64),
    "mixed": lambda rng: np.concatenate(
        [rng.normal(25000, 5, (4, 576)), np.full((4, 576), -7), rng.integers(0, 2**18, (4, 576))]
    ),
    "stars": lambda rng: rng.normal(900, 30, (32, 333)) + 1e5 * (rng.random((32, 333)) > 0.99),
    "odd width": lambda rng: rng.normal(0, 1000, (5, 37)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_astropy(case):
    pixels = np.rint(CASES[case](np.random.default_rng(1))).astype(np.int32)
    header, data = compressed_hdu(pixels)
    got = decode_rice_hdu(header, data)
    assert got is not None
    np.testing.assert_array_equal(got, pixels)


def test_multi_row_tiles_and_other_block_size():
    pixels = np.rint(np.random.default_rng(2).normal(100, 10, (30, 50))).astype(np.int32)
    header, data = compressed_hdu(pixels, tile=(4, 50))
    np.testing.assert_array_equal(decode_rice_hdu(header, data), pixels)


def test_a_truncated_tile_is_detected_not_returned():
    pixels = np.rint(np.random.default_rng(3).normal(25000, 5, (16, 576))).astype(np.int32)
    header, data = compressed_hdu(pixels)
    heap = int(header.get("THEAP", header["NAXIS1"] * header["NAXIS2"]))
    broken = bytearray(data)
    del broken[heap + 40 :]  # cut the heap inside the first tile
    with pytest.raises(RiceDecodeError, match="tile 0"):
        decode_rice_hdu(header, bytes(broken))


def test_what_it_does_not_do_goes_back_to_astropy():
    pixels = np.arange(100, dtype=np.int16).reshape(10, 10)
    hdu = fits.CompImageHDU(pixels, compression_type="GZIP_1")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    raw = fits.open(io.BytesIO(buf.getvalue()), disable_image_compression=True)[1]
    assert decode_rice_hdu(raw.header, b"") is None


def test_image_header_is_what_astropy_makes():
    pixels = np.zeros((4, 576), dtype=np.int32)
    header, _ = compressed_hdu(pixels)
    header["EXTNAME"] = "Segment10"
    header["DATASEC"] = "[4:512,1:2000]"
    img = image_header(header)
    assert (img["XTENSION"], img["BITPIX"], img["NAXIS1"], img["NAXIS2"]) == ("IMAGE", 32, 576, 4)
    assert img["DATASEC"] == "[4:512,1:2000]"
    assert not any(k.startswith(("ZTILE", "ZCMP", "TFORM")) for k in img)
