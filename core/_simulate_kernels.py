"""Pure numba kernels of the raw simulator (``core.simulate``): no I/O, no config, no global RNG.

Random numbers are counter-based: every draw is ``splitmix64(key + counter * GOLDEN)`` with a
64-bit ``key`` per (seed, exposure, detector, amp, stream) made in Python from numpy's
``SeedSequence``, and ``counter`` the pixel's index. A pixel's noise therefore does not depend on
which thread fills it, in what order, or how many amps run at once.

Every kernel has a slow, obvious numpy twin in ``tests/core/test_simulate.py``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from core._jit import ngjit, ngjit_parallel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 2.0 * math.pi
_2M32 = 1.0 / 4294967296.0
_2M53 = 1.0 / 9007199254740992.0
_2M25 = 1.0 / 33554432.0

# Below this many electrons the signal gets an exact Poisson draw; above, the normal limit.
POISSON_EXACT_BELOW = 20.0
ADC_MAX = 2**18 - 1


# ---------------------------------------------------------------------------------------------
# Counter-based random numbers


@ngjit
def splitmix64(key, counter):
    """The splitmix64 output for state ``key + counter * GOLDEN`` (all uint64 arithmetic)."""
    z = np.uint64(key) + np.uint64(counter) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@ngjit
def uniform(key, counter):
    """A uniform double in [0, 1) (53 bits)."""
    return float(np.int64(splitmix64(key, counter) >> np.uint64(11))) * _2M53


def _ziggurat_tables(n: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia & Tsang's (2000) ziggurat tables for the standard normal, 128 layers."""
    m1 = 2147483648.0
    dn = 3.442619855899
    tn = dn
    vn = 9.91256303526217e-3
    kn = np.zeros(n, dtype=np.int64)
    wn = np.zeros(n)
    fn = np.zeros(n)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[n - 1] = dn / m1
    fn[0] = 1.0
    fn[n - 1] = math.exp(-0.5 * dn * dn)
    for i in range(n - 2, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()
_ZIG_R = 3.442619855899
_TAIL = np.uint64(0x5DEECE66D2545F49)  # a second stream for the ziggurat's rare slow path


@ngjit
def normal_from(h, key, counter):
    """A standard normal from the 64-bit draw ``h = splitmix64(key, counter)`` by the ziggurat:
    layer from bits 0-6, value from bits 32-63 (bits 7-31 are left for ``uniform25``). The rare
    slow path (~1 %) draws more from a second stream of the same counter, so the result is still
    a pure function of (key, counter).
    """
    iz = np.int64(h & np.uint64(127))
    hz = np.int64(np.int32(np.uint32(h >> np.uint64(32))))  # signed 32-bit
    if abs(hz) < _ZIG_K[iz]:
        return hz * _ZIG_W[iz]
    k2 = np.uint64(key) ^ _TAIL
    c2 = np.uint64(counter) << np.uint64(6)
    j = 0
    while True:
        x = hz * _ZIG_W[iz]
        if iz == 0:
            while True:
                x = -math.log(1.0 - uniform(k2, c2 + np.uint64(j))) / _ZIG_R
                y = -math.log(1.0 - uniform(k2, c2 + np.uint64(j + 1)))
                j += 2
                if y + y >= x * x:
                    break
            return _ZIG_R + x if hz > 0 else -_ZIG_R - x
        f0 = _ZIG_F[iz]
        if f0 + uniform(k2, c2 + np.uint64(j)) * (_ZIG_F[iz - 1] - f0) < math.exp(-0.5 * x * x):
            return x
        h2 = splitmix64(k2, c2 + np.uint64(j + 1))
        j += 2
        iz = np.int64(h2 & np.uint64(127))
        hz = np.int64(np.int32(np.uint32(h2 >> np.uint64(32))))
        if abs(hz) < _ZIG_K[iz]:
            return hz * _ZIG_W[iz]


@ngjit
def uniform25(h):
    """A uniform in (0, 1) from bits 7-31 of a draw (independent of ``normal_from``'s bits)."""
    return (float(np.int64((h >> np.uint64(7)) & np.uint64(0x1FFFFFF))) + 0.5) * _2M25


@ngjit
def normal(key, counter):
    """A standard normal, a pure function of (key, counter)."""
    return normal_from(splitmix64(key, counter), key, counter)


@ngjit
def poisson_inv(lam, u):
    """The Poisson(lam) quantile of ``u`` (exact inversion; for small ``lam``)."""
    if lam <= 0.0:
        return 0.0
    p = math.exp(-lam)
    s = p
    k = 0
    while u > s and k < 200:
        k += 1
        p *= lam / k
        s += p
    return float(k)


@ngjit
def pixel_draws(key, counter):
    """The two random numbers of one raw pixel: its read-noise normal and its Poisson uniform."""
    h = splitmix64(key, counter)
    return normal_from(h, key, counter), uniform25(h)


@ngjit
def fill_draws(key, z, u):
    """``z[i], u[i] = pixel_draws(key, i)`` (for tests and the slow twin of ``fill_segment``)."""
    for i in range(z.shape[0]):
        z[i], u[i] = pixel_draws(key, i)


@ngjit
def poisson_small(lam, key, counter):
    """An exact Poisson draw by inversion; meant for ``lam < POISSON_EXACT_BELOW``."""
    if lam <= 0.0:
        return 0.0
    return poisson_inv(lam, uniform(key, counter))


@ngjit
def fill_uniform(key, out):
    """``out[i] = uniform(key, i)`` (for tests of the generator)."""
    for i in range(out.shape[0]):
        out[i] = uniform(key, i)


@ngjit
def fill_normal(key, out):
    """``out[i] = normal(key, i)`` (for tests of the generator)."""
    for i in range(out.shape[0]):
        out[i] = normal(key, i)


@ngjit
def fill_poisson(lam, key, out):
    """``out[i] = poisson_small(lam, key, i)`` (for tests of the generator)."""
    for i in range(out.shape[0]):
        out[i] = poisson_small(lam, key, i)


# ---------------------------------------------------------------------------------------------
# The assembled-CCD signal, in electrons (array row 0 at the bottom)


@ngjit
def fill_background(signal, level, vignetting, r_edge, fp_x, fp_y, ref_x, ref_y, a, b, c, d, floor):
    """``signal = level * (1 - vignetting * (r / r_edge)**2) + floor``.

    ``r`` is the focal-plane radius of the pixel: ``(fx, fy) = fp + [[a, b], [c, d]] @ (x - ref)``,
    the same mapping as ``Detector.ccd_to_fp``.
    """
    ny, nx = signal.shape
    inv = 1.0 / (r_edge * r_edge)
    for y in range(ny):
        dy = y - ref_y
        for x in range(nx):
            dx = x - ref_x
            fx = fp_x + a * dx + b * dy
            fy = fp_y + c * dx + d * dy
            signal[y, x] = level * (1.0 - vignetting * (fx * fx + fy * fy) * inv) + floor


@ngjit
def moffat_stamp(flux, xc, yc, alpha, beta, radius):
    """A Moffat star sampled at pixel centres and scaled to sum to ``flux``.

    Returns ``(stamp, ix0, iy0)``: the stamp covers CCD columns ``ix0 .. ix0 + w - 1`` and rows
    ``iy0 .. iy0 + h - 1`` (it may reach outside the CCD; the caller clips).
    """
    ix0 = math.floor(xc) - radius
    iy0 = math.floor(yc) - radius
    n = 2 * radius + 2
    stamp = np.empty((n, n), dtype=np.float64)
    inv_a2 = 1.0 / (alpha * alpha)
    total = 0.0
    for j in range(n):
        dy = iy0 + j - yc
        for i in range(n):
            dx = ix0 + i - xc
            v = (1.0 + (dx * dx + dy * dy) * inv_a2) ** (-beta)
            stamp[j, i] = v
            total += v
    scale = flux / total
    for j in range(n):
        for i in range(n):
            stamp[j, i] *= scale
    return stamp, ix0, iy0


@ngjit
def add_stars(signal, xs, ys, fluxes, alpha, beta, radii, peaks):
    """Add Moffat stars (serially, in the given order); ``peaks[k]`` = the brightest stamp pixel."""
    ny, nx = signal.shape
    for k in range(xs.shape[0]):
        stamp, ix0, iy0 = moffat_stamp(fluxes[k], xs[k], ys[k], alpha, beta, radii[k])
        n = stamp.shape[0]
        peaks[k] = stamp.max()
        for j in range(n):
            y = iy0 + j
            if y < 0 or y >= ny:
                continue
            for i in range(n):
                x = ix0 + i
                if 0 <= x < nx:
                    signal[y, x] += stamp[j, i]


@ngjit
def add_tracks(signal, x0, y0, x1, y1, per_px):
    """Add straight cosmic-ray tracks: ``per_px`` electrons per pixel of length, in 1/4-px steps."""
    ny, nx = signal.shape
    for k in range(x0.shape[0]):
        length = math.hypot(x1[k] - x0[k], y1[k] - y0[k])
        steps = max(1, math.ceil(length * 4.0))
        dep = per_px[k] * max(length, 1.0) / steps
        for s in range(steps + 1):
            t = s / steps
            x = math.floor(x0[k] + t * (x1[k] - x0[k]) + 0.5)
            y = math.floor(y0[k] + t * (y1[k] - y0[k]) + 0.5)
            if 0 <= x < nx and 0 <= y < ny:
                signal[y, x] += dep * (0.5 if s == 0 or s == steps else 1.0)


@ngjit
def bleed_columns(signal, x0, x1, y0, y1, full_well):
    """Saturate at ``full_well`` and spill the excess charge up and down the column, halves each
    way, within the box ``[x0, x1) x [y0, y1)`` (one amplifier); charge reaching its edge is lost.
    """
    hot = np.zeros(x1 - x0, dtype=np.bool_)
    for y in range(y0, y1):  # row-major scan for the columns that need work
        for x in range(x0, x1):
            if signal[y, x] > full_well:
                hot[x - x0] = True
    for x in range(x0, x1):
        if not hot[x - x0]:
            continue
        y = y0
        while y < y1:
            if signal[y, x] <= full_well:
                y += 1
                continue
            start = y
            excess = 0.0
            while y < y1 and signal[y, x] >= full_well:
                excess += signal[y, x] - full_well
                signal[y, x] = full_well
                y += 1
            up = excess * 0.5
            down = excess - up
            p = y
            while up > 0.0 and p < y1:
                room = full_well - signal[p, x]
                if room > 0.0:
                    take = room if room < up else up
                    signal[p, x] += take
                    up -= take
                p += 1
            p = start - 1
            while down > 0.0 and p >= y0:
                room = full_well - signal[p, x]
                if room > 0.0:
                    take = room if room < down else down
                    signal[p, x] += take
                    down -= take
                p -= 1


# ---------------------------------------------------------------------------------------------
# One raw segment from the signal


@ngjit
def digitize(value, clip_hi):
    """The ADC: round to the nearest integer, clip to [0, clip_hi]."""
    v = math.floor(value + 0.5)
    if v < 0.0:
        v = 0.0
    if v > clip_hi:
        v = clip_hi
    return np.int32(v)


@ngjit
def pixel_value(lam, inv_gain, rn_adu, offset, z, u, clip_hi):
    """Raw ADU of a pixel holding ``lam`` e- on average: Poisson signal (exact by inversion of
    ``u`` below ``POISSON_EXACT_BELOW`` e-, its normal limit above, sharing ``z`` with the read
    noise), gain, read noise ``rn_adu * z`` and the offset (bias), digitized."""
    if lam < POISSON_EXACT_BELOW:
        e = poisson_inv(lam, u) if lam > 0.0 else 0.0
        return digitize(offset + e * inv_gain + rn_adu * z, clip_hi)
    sig = math.sqrt(lam * inv_gain * inv_gain + rn_adu * rn_adu)
    return digitize(offset + lam * inv_gain + sig * z, clip_hi)


@ngjit
def fill_segment(
    out, signal, x0, y0, flip_x, flip_y, pre, nxd, nyd, gain, rn_adu, clip_hi,
    cti_s, n_s, tail_s, cti_p, n_p, tail_p, row_offset, key, dead_level,
):  # fmt: skip
    """Fill one raw segment ``out`` (raw rows x raw columns, readout order) from the CCD signal.

    Data pixel ``(u, v)`` (``u = column - pre``, ``v = row``) shows CCD pixel
    ``x = x0 + (nxd - 1 - u if flip_x else u)``, ``y = y0 + (nyd - 1 - v if flip_y else v)``.
    The first serial-overscan columns get ``cti_s * (n_s + 1) * S_last * tail_s[k]`` e- (EPER),
    the first parallel-overscan rows ``cti_p * (n_p + 1) * S_lastrow * tail_p[k]``. Every pixel
    gets ``row_offset[row]`` (bias + wander + jumps) and read noise; pixel ``i = row * cols + col``
    draws ``pixel_draws(key, i)``. ``dead_level >= 0`` makes a disconnected amp: that constant
    everywhere, no noise.
    """
    rows, cols = out.shape
    if dead_level >= 0.0:
        v = np.int32(math.floor(dead_level + 0.5))
        for r in range(rows):
            for c in range(cols):
                out[r, c] = v
        return
    inv_gain = 1.0 / gain
    n_ts = min(tail_s.shape[0], cols - pre - nxd)
    n_tp = tail_p.shape[0]
    eper_s = cti_s * (n_s + 1)
    eper_p = cti_p * (n_p + 1)
    y_last = y0 + (0 if flip_y else nyd - 1)  # the data row read out last
    # CCD column of data column u: xa + xs * u
    xa = x0 + nxd - 1 if flip_x else x0
    xs = -1 if flip_x else 1
    for r in range(rows):
        off = row_offset[r]
        base = r * cols
        if r < nyd:
            y = y0 + (nyd - 1 - r if flip_y else r)
            for c in range(pre):
                z, u = pixel_draws(key, base + c)
                out[r, c] = digitize(off + rn_adu * z, clip_hi)
            for c in range(pre, pre + nxd):
                z, u = pixel_draws(key, base + c)
                lam = signal[y, xa + xs * (c - pre)]
                out[r, c] = pixel_value(lam, inv_gain, rn_adu, off, z, u, clip_hi)
            s_last = eper_s * signal[y, xa + xs * (nxd - 1)]
            for t in range(n_ts):
                c = pre + nxd + t
                z, u = pixel_draws(key, base + c)
                lam = s_last * tail_s[t]
                out[r, c] = pixel_value(lam, inv_gain, rn_adu, off, z, u, clip_hi)
            for c in range(pre + nxd + n_ts, cols):
                z, u = pixel_draws(key, base + c)
                out[r, c] = digitize(off + rn_adu * z, clip_hi)
        else:
            t = r - nyd
            w = eper_p * tail_p[t] if t < n_tp else 0.0
            for c in range(cols):
                z, u = pixel_draws(key, base + c)
                lam = 0.0
                if w > 0.0 and pre <= c < pre + nxd:
                    lam = w * signal[y_last, xa + xs * (c - pre)]
                out[r, c] = pixel_value(lam, inv_gain, rn_adu, off, z, u, clip_hi)


@ngjit
def fill_segments(out, signal, geom, par, tail_s, tail_p, row_offset, keys):
    """All segments, one after the other (for use inside worker threads or processes).

    ``geom[a] = (x0, y0, flip_x, flip_y, pre, nxd, nyd, n_s, n_p)``,
    ``par[a] = (gain, rn_adu, clip_hi, cti_s, cti_p, dead_level)``, ``keys[a]`` the noise key.
    """
    for a in range(out.shape[0]):
        _fill_one(out, signal, geom, par, tail_s, tail_p, row_offset, keys, a)


@ngjit_parallel
def fill_segments_parallel(out, signal, geom, par, tail_s, tail_p, row_offset, keys):
    """``fill_segments`` with one amp per thread: each writes only its own slab ``out[a]``."""
    for a in numba.prange(out.shape[0]):
        _fill_one(out, signal, geom, par, tail_s, tail_p, row_offset, keys, a)


@ngjit
def _fill_one(out, signal, geom, par, tail_s, tail_p, row_offset, keys, a):
    g = geom[a]
    p = par[a]
    fill_segment(
        out[a], signal, g[0], g[1], g[2] != 0, g[3] != 0, g[4], g[5], g[6], p[0], p[1], p[2],
        p[3], g[7], tail_s, p[4], g[8], tail_p, row_offset[a], keys[a], p[5],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# RICE_1 (the FITS tile-compression Rice coder of cfitsio, 32-bit pixels, blocks of 32)

RICE_BLOCK = 32
_FSBITS = 5
_FSMAX = 25
_BBITS = 32


def rice_max_bytes(n: int) -> int:
    """An upper bound of the RICE_1 code of ``n`` 32-bit pixels."""
    nblocks = (n + RICE_BLOCK - 1) // RICE_BLOCK
    return 4 + nblocks * ((_FSBITS + RICE_BLOCK * _BBITS + 7) // 8 + 1) + 8


@ngjit
def rice_encode(a, out):
    """RICE_1 code of the int32 pixels ``a`` into ``out`` (uint8); returns the number of bytes.

    Bit for bit the coder of cfitsio's ``fits_rcomp`` (as used by the camera and by astropy):
    the first pixel as 4 big-endian bytes, then per block of 32 the mapped differences, each
    block with the split ``fs`` chosen from its mean (or raw 32-bit values, or all-zero).
    """
    n = a.shape[0]
    first = np.uint32(np.int64(a[0]) & 0xFFFFFFFF)
    out[0] = np.uint8((first >> np.uint32(24)) & np.uint32(0xFF))
    out[1] = np.uint8((first >> np.uint32(16)) & np.uint32(0xFF))
    out[2] = np.uint8((first >> np.uint32(8)) & np.uint32(0xFF))
    out[3] = np.uint8(first & np.uint32(0xFF))
    pos = 4
    acc = np.uint64(0)  # pending bits: the low `nacc` (< 8 between pixels); higher bits are
    # already written and just fall off the top as acc shifts
    nacc = 0
    diff = np.empty(RICE_BLOCK, dtype=np.int64)
    last = np.int64(a[0])
    for i in range(0, n, RICE_BLOCK):
        nb = min(RICE_BLOCK, n - i)
        total = 0.0
        for j in range(nb):
            nxt = np.int64(a[i + j])
            d = nxt - last
            d = ((d + 2147483648) & 0xFFFFFFFF) - 2147483648  # wrap to int32
            diff[j] = (d << 1) if d >= 0 else (-(d << 1) - 1)
            total += diff[j]
            last = nxt
        dpsum = (total - (nb // 2) - 1) / nb
        if dpsum < 0.0:
            dpsum = 0.0
        psum = np.int64(dpsum) >> 1
        fs = 0
        while psum > 0:
            psum >>= 1
            fs += 1
        if fs >= _FSMAX:
            acc = (acc << np.uint64(_FSBITS)) | np.uint64(_FSMAX + 1)
            nacc += _FSBITS
            while nacc >= 8:
                nacc -= 8
                out[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
                pos += 1
            for j in range(nb):
                acc = (acc << np.uint64(_BBITS)) | np.uint64(diff[j])
                nacc += _BBITS
                while nacc >= 8:
                    nacc -= 8
                    out[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
                    pos += 1
        elif fs == 0 and total == 0.0:
            acc = acc << np.uint64(_FSBITS)
            nacc += _FSBITS
            while nacc >= 8:
                nacc -= 8
                out[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
                pos += 1
        else:
            acc = (acc << np.uint64(_FSBITS)) | np.uint64(fs + 1)
            nacc += _FSBITS
            mask = (np.int64(1) << fs) - 1
            lead = np.uint64(1) << np.uint64(fs)
            for j in range(nb):
                v = diff[j]
                top = v >> fs
                if top < 24:  # the usual case: `top` zeros, a one and fs bits in one go
                    nbits = top + 1 + fs
                    acc = (acc << np.uint64(nbits)) | lead | np.uint64(v & mask)
                    nacc += nbits
                else:
                    while top > 0:  # `top` zeros, 32 at a time
                        step = top if top < 32 else 32
                        acc = acc << np.uint64(step)
                        nacc += step
                        top -= step
                        while nacc >= 8:
                            nacc -= 8
                            out[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
                            pos += 1
                    acc = (acc << np.uint64(1 + fs)) | lead | np.uint64(v & mask)
                    nacc += 1 + fs
                while nacc >= 8:
                    nacc -= 8
                    out[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
                    pos += 1
    if nacc > 0:
        out[pos] = np.uint8((acc << np.uint64(8 - nacc)) & np.uint64(0xFF))
        pos += 1
    return pos


@ngjit
def rice_encode_rows(image, buf, lengths):
    """Each row of ``image`` (one tile) coded into its own row of ``buf``."""
    for r in range(image.shape[0]):
        lengths[r] = rice_encode(image[r], buf[r])


@ngjit_parallel
def rice_encode_rows_parallel(image, buf, lengths):
    """``rice_encode_rows`` with rows spread over threads (each writes its own ``buf`` row)."""
    for r in numba.prange(image.shape[0]):
        lengths[r] = rice_encode(image[r], buf[r])


@ngjit
def pack_heap(buf, lengths, heap):
    """Concatenate the coded tiles into the heap; returns the tile offsets."""
    offsets = np.empty(lengths.shape[0], dtype=np.int64)
    pos = 0
    for r in range(lengths.shape[0]):
        offsets[r] = pos
        n = lengths[r]
        heap[pos : pos + n] = buf[r, :n]
        pos += n
    return offsets
