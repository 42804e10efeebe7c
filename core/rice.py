"""Fast decoding of RICE_1 tile-compressed integer images (``core._rice_kernels``).

``decode_rice_hdu`` returns None for anything it does not handle exactly (other algorithms,
quantised floats, BZERO/BSCALE, gzip fall-back tiles, tiles not made of whole rows), and the
caller then uses astropy: never a wrong answer, only sometimes a slower one.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from core._rice_kernels import decode_tiles

_TABLE_KEYS = {
    "XTENSION",
    "BITPIX",
    "NAXIS",
    "PCOUNT",
    "GCOUNT",
    "TFIELDS",
    "THEAP",
    "ZIMAGE",
    "ZTENSION",
    "ZBITPIX",
    "ZNAXIS",
    "ZPCOUNT",
    "ZGCOUNT",
    "ZCMPTYPE",
    "ZQUANTIZ",
    "ZDITHER0",
    "ZSIMPLE",
    "ZEXTEND",
    "ZBLOCKED",
    "ZHECKSUM",
    "ZDATASUM",
    "CHECKSUM",
    "DATASUM",
}
_TABLE_PREFIXES = ("NAXIS", "TTYPE", "TFORM", "TUNIT", "TDIM", "ZTILE", "ZNAME", "ZVAL", "ZNAXIS")


def image_header(table_header: fits.Header) -> fits.Header:
    """The image header a tile-compressed HDU stands for (as astropy's CompImageHDU gives it):
    the table's structural and Z keywords replaced by the image's."""
    out = fits.Header()
    out["XTENSION"] = "IMAGE"
    out["BITPIX"] = table_header["ZBITPIX"]
    out["NAXIS"] = table_header["ZNAXIS"]
    for i in range(1, int(table_header["ZNAXIS"]) + 1):
        out[f"NAXIS{i}"] = table_header[f"ZNAXIS{i}"]
    out["PCOUNT"] = 0
    out["GCOUNT"] = 1
    for card in table_header.cards:
        key = card.keyword
        if key in _TABLE_KEYS or (key.startswith(_TABLE_PREFIXES) and key[-1:].isdigit()):
            continue
        out.append(card)
    # the image's own checksums travel as ZHECKSUM / ZDATASUM (the table's are not the image's)
    for z, key in (("ZHECKSUM", "CHECKSUM"), ("ZDATASUM", "DATASUM")):
        if z in table_header:
            out[key] = (table_header[z], table_header.comments[z])
    return out


class RiceDecodeError(ValueError):
    """A tile is truncated or corrupt."""


def _zval(header: fits.Header, name: str, default: int) -> int:
    for i in range(1, 10):
        if str(header.get(f"ZNAME{i}", "")).strip().upper() == name:
            return int(header.get(f"ZVAL{i}", default))
    return default


def decode_rice_hdu(
    header: fits.Header, data: bytes | memoryview | np.ndarray
) -> np.ndarray | None:
    """Pixels (ny, nx) int32 of one RICE_1 tile-compressed HDU from its header and data bytes."""
    if str(header.get("ZCMPTYPE", "")).strip() != "RICE_1" or header.get("ZBITPIX") != 32:
        return None
    if header.get("ZNAXIS") != 2 or header.get("TTYPE1", "").strip() != "COMPRESSED_DATA":
        return None
    if header.get("TFIELDS") != 1 or header.get("ZQUANTIZ") not in (None, "NONE", "NO_DITHER"):
        return None
    if header.get("BZERO", 0) != 0 or header.get("BSCALE", 1) != 1 or "ZZERO" in header:
        return None
    if _zval(header, "BYTEPIX", 4) != 4:
        return None
    nx, ny = int(header["ZNAXIS1"]), int(header["ZNAXIS2"])
    tx, ty = int(header.get("ZTILE1", nx)), int(header.get("ZTILE2", 1))
    if tx != nx:
        return None
    tform = str(header["TFORM1"]).strip().upper()
    descr = {"P": ">i4", "Q": ">i8"}.get(tform.lstrip("0123456789")[:1])
    if descr is None:
        return None
    n_tiles = int(header["NAXIS2"])
    row_bytes = int(header["NAXIS1"])
    buf = np.frombuffer(data, dtype=np.uint8)
    table = buf[: row_bytes * n_tiles].view(descr).reshape(n_tiles, 2).astype(np.int64)
    heap_start = int(header.get("THEAP", row_bytes * n_tiles))
    out = np.empty(nx * ny, dtype=np.int32)
    bad = decode_tiles(
        buf,
        heap_start,
        table[:, 0].copy(),
        table[:, 1].copy(),
        tx * ty,
        nx * ny,
        _zval(header, "BLOCKSIZE", 32),
        out,
    )
    if bad >= 0:
        raise RiceDecodeError(f"RICE tile {bad} of {n_tiles} is truncated or corrupt")
    return out.reshape(ny, nx)
