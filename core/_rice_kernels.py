"""RICE_1 decoding of FITS tile-compressed 32-bit integer images (the camera's raw format).

The algorithm is the one of the FITS tiled-image convention (Pence, White & Seaman): per tile, the
first pixel as 4 big-endian bytes, then blocks of ``blocksize`` pixel differences, each block led
by a 5-bit code ``fs + 1``: 0 means all differences zero, 26 means the differences are stored raw
in 32 bits, anything else means Rice codes with ``fs`` low bits (a unary high part: zeros ended by
a one). Differences are zig-zag mapped (even: ``d >> 1``, odd: ``~(d >> 1)``). All tiles decode in
one kernel call, so there is no per-tile Python overhead (astropy loops over tiles in Python).
"""

from __future__ import annotations

import numpy as np

from core._jit import ngjit

FSBITS = 5
FSMAX = 25
BBITS = 32


# bit length of a byte: 0 -> 0, 1 -> 1, 2..3 -> 2, ..., 128..255 -> 8
_BIT_LENGTH = np.array([int(v).bit_length() for v in range(256)], dtype=np.int64)


@ngjit
def _signed(u):
    """An unsigned 32-bit value (held in an int64) as int32."""
    return np.int32(u - ((u & 0x80000000) << 1))


@ngjit
def decode_tile(buf, start, end, out, o0, n, blocksize):
    """Decode one tile of ``n`` pixels from ``buf[start:end]`` into ``out[o0:o0 + n]``.

    Returns 0 on success, 1 when the tile's bytes run out (a truncated or corrupt tile).
    """
    if end - start < 4:
        return 1
    c = start
    lastpix = (
        (np.int64(buf[c]) << 24)
        | (np.int64(buf[c + 1]) << 16)
        | (np.int64(buf[c + 2]) << 8)
        | np.int64(buf[c + 3])
    )
    c += 4
    mask32 = np.int64(0xFFFFFFFF)
    if c >= end:
        return 1
    b = np.int64(buf[c])
    c += 1
    nbits = 8
    i = 0
    while i < n:
        imax = min(i + blocksize, n)
        nbits -= FSBITS
        while nbits < 0:
            if c >= end:
                return 1
            b = (b << 8) | np.int64(buf[c])
            c += 1
            nbits += 8
        fs = (b >> nbits) - 1
        b &= (np.int64(1) << nbits) - 1
        if fs < 0:
            for k in range(i, imax):
                out[o0 + k] = _signed(lastpix)
        elif fs == FSMAX:
            for k in range(i, imax):
                k2 = BBITS - nbits
                diff = (b << k2) & mask32
                k2 -= 8
                while k2 >= 0:
                    if c >= end:
                        return 1
                    b = np.int64(buf[c])
                    c += 1
                    diff |= b << k2
                    k2 -= 8
                if nbits > 0:
                    if c >= end:
                        return 1
                    b = np.int64(buf[c])
                    c += 1
                    diff |= b >> (-k2)
                    b &= (np.int64(1) << nbits) - 1
                else:
                    b = 0
                diff &= mask32
                if diff & 1 == 0:
                    diff = diff >> 1
                else:
                    diff = (~(diff >> 1)) & mask32
                lastpix = (diff + lastpix) & mask32
                out[o0 + k] = _signed(lastpix)
        else:
            for k in range(i, imax):
                while b == 0:
                    if c >= end:
                        return 1
                    nbits += 8
                    b = np.int64(buf[c])
                    c += 1
                nzero = nbits - _BIT_LENGTH[b]  # b < 256 here: it holds fewer than 8 bits
                nbits -= nzero + 1
                b ^= np.int64(1) << nbits
                nbits -= fs
                while nbits < 0:
                    if c >= end:
                        return 1
                    b = (b << 8) | np.int64(buf[c])
                    c += 1
                    nbits += 8
                diff = ((np.int64(nzero) << fs) | (b >> nbits)) & mask32
                b &= (np.int64(1) << nbits) - 1
                if diff & 1 == 0:
                    diff = diff >> 1
                else:
                    diff = (~(diff >> 1)) & mask32
                lastpix = (diff + lastpix) & mask32
                out[o0 + k] = _signed(lastpix)
        i = imax
    return 0


@ngjit
def decode_tiles(buf, heap_start, counts, offsets, tile_len, n_pixels, blocksize, out):
    """Decode every tile (descriptor ``counts[t]`` bytes at ``heap_start + offsets[t]``) into the
    flat ``out``. Returns -1 on success, else the index of the first bad tile."""
    size = buf.shape[0]
    for t in range(counts.shape[0]):
        start = heap_start + offsets[t]
        end = start + counts[t]
        if start < 0 or end > size or counts[t] < 4:
            return t
        o0 = t * tile_len
        n = min(tile_len, n_pixels - o0)
        if decode_tile(buf, start, end, out, o0, n, blocksize) != 0:
            return t
    return -1
