"""Pure numba kernels of the instrument signature removal and the pyramid (no I/O, no config).

Every kernel has a slow, obvious numpy twin in ``tests/core/reference.py``.
"""

from __future__ import annotations

import numpy as np

from core._jit import ngjit


@ngjit
def quickselect(buf, n, k):
    """k-th smallest of buf[:n] (buf is reordered)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                t = buf[i]
                buf[i] = buf[j]
                buf[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return buf[k]
    return buf[k]


@ngjit
def median_inplace(buf, n):
    """Median of buf[:n] (buf is reordered); NaN when n == 0."""
    if n == 0:
        return np.nan
    if n % 2 == 1:
        return float(quickselect(buf, n, n // 2))
    a = float(quickselect(buf, n, n // 2 - 1))
    b = float(quickselect(buf, n, n // 2))
    return 0.5 * (a + b)


@ngjit
def median_from_hist(hist, lo, hi, n, c0=0):
    """Median (in bin indices) of n entries counted in hist[lo:hi + 1], ``c0`` of them below:
    the mean of the lower and upper middle ranks (one and the same when n is odd), in one walk
    (the last bin when the counts run out)."""
    k1 = (n - 1) // 2
    k2 = n // 2
    c = c0
    a = hi
    found = False
    for i in range(lo, hi + 1):
        c += hist[i]
        if not found and c > k1:
            a = i
            found = True
        if c > k2:
            return 0.5 * (a + i)
    return 0.5 * (a + hi)


@ngjit
def median_counting(row, hist):
    """Median of integer ``row`` by counting, when its range fits ``hist``; NaN otherwise.

    Overscan rows are a few tens of ADU wide, so this is a few passes over ~60 values instead
    of a selection.
    """
    n = row.shape[0]
    lo = np.int64(row[0])
    hi = lo
    for i in range(1, n):
        v = np.int64(row[i])
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    span = hi - lo + 1
    if span > hist.shape[0]:
        return np.nan
    for i in range(span):
        hist[i] = 0
    for i in range(n):
        hist[np.int64(row[i]) - lo] += 1
    return lo + median_from_hist(hist, 0, span - 1, n)


@ngjit
def clipped_mean(values, centre, lim):
    """Mean of the values within ``lim`` of ``centre`` (``centre`` if none are)."""
    s = 0.0
    c = 0
    for i in range(values.shape[0]):
        d = values[i] - centre
        if -lim <= d <= lim:
            s += values[i]
            c += 1
    return s / c if c > 0 else centre


@ngjit
def median_abs_dev_counting(block, med, step, hist):
    """Median of ``|block[y, i] - med[y]|`` over the rows 0, step, 2 step, ... of integer data
    whose row medians are whole or half integers (medians of integers), counted in half-ADU
    bins: the same value as a selection, in one pass. NaN when the middle deviations lie beyond
    the last bin (a noisy block: the caller selects)."""
    ny, m = block.shape
    nb = hist.shape[0]
    for j in range(nb):
        hist[j] = 0
    n = 0
    inside = 0
    for y in range(0, ny, step):
        twice_med = 2.0 * med[y]
        row = block[y]
        for i in range(m):
            j = int(abs(2.0 * row[i] - twice_med))  # exact: an integer in a float
            if j < nb:
                hist[j] += 1
                inside += 1
        n += m
    if inside <= n // 2:  # no values, or the upper middle one beyond the bins
        return np.nan
    return 0.5 * median_from_hist(hist, 0, nb - 1, n)  # half-ADU bins


@ngjit
def robust_rows(block, clip, out, integer):
    """Per row of ``block`` (rows, columns): the mean of the values within ``clip`` robust
    sigmas of the row's median. One sigma for the whole block (1.4826 x the MAD about the row
    medians, over every 4th row, at least 1 ADU) keeps it to one selection per row; for
    integer data, medians and MAD are counted (``median_counting``,
    ``median_abs_dev_counting``: 3x faster than selecting, the same values)."""
    ny, m = block.shape
    buf = np.empty(m, dtype=block.dtype)
    med = np.empty(ny, dtype=np.float64)
    hist = np.empty(512, dtype=np.int64)
    for y in range(ny):
        v = median_counting(block[y], hist) if integer else np.nan
        if v != v:  # wide row (a cosmic ray) or float data: selection
            for i in range(m):
                buf[i] = block[y, i]
            v = median_inplace(buf, m)
        med[y] = v
    mad = np.nan
    if integer:
        mad = median_abs_dev_counting(block, med, 4, np.empty(1024, dtype=np.int64))
    if mad != mad:  # float data, or deviations wider than the counting bins
        n_dev = ((ny + 3) // 4) * m
        dev = np.empty(n_dev, dtype=np.float64)
        k = 0
        for y in range(0, ny, 4):
            for i in range(m):
                dev[k] = abs(block[y, i] - med[y])
                k += 1
        mad = median_inplace(dev, k)
    sigma = 1.4826 * mad
    if sigma < 1.0:
        sigma = 1.0
    lim = clip * sigma
    for y in range(ny):
        out[y] = clipped_mean(block[y], med[y], lim)


@ngjit
def serial_overscan_rows(segments, ox0, ox1, clip, out):
    """Per amp and raw row, the robust mean of the serial overscan columns [ox0, ox1)."""
    for a in range(segments.shape[0]):
        # a C-ordered copy (400 kB): the kernels then run on contiguous rows, twice as fast
        robust_rows(np.ascontiguousarray(segments[a, :, ox0:ox1]), clip, out[a], True)


@ngjit
def parallel_overscan_cols(segments, row_bias, x0, x1, py0, py1, clip, out):
    """Per amp and data column, the robust mean of the parallel overscan rows [py0, py1),
    after the rounded serial (row) bias is removed."""
    w = x1 - x0
    block = np.empty((w, py1 - py0), dtype=np.float64)
    for a in range(segments.shape[0]):
        for j in range(py1 - py0):
            b = np.rint(row_bias[a, py0 + j])
            for u in range(w):
                block[u, j] = segments[a, py0 + j, x0 + u] - b
        robust_rows(block, clip, out[a], False)


@ngjit
def assemble_corrected(segments, row_bias, col_bias, x0, x1, y0, y1, base, step_u, step_v, out):
    """Trim, subtract the rounded overscan bias and write each data pixel where it belongs.

    Amp ``a``'s data pixel (u, v) (readout order) gets
    ``raw - rint(row_bias[a, y0 + v]) - rint(col_bias[a, u])`` and lands at flat index
    ``base[a] + u * step_u[a] + v * step_v[a]`` of ``out``: flips, placement and rotation are
    all one affine map per amp, worked out by the caller.
    """
    flat = out.reshape(-1)
    w = x1 - x0
    h = y1 - y0
    cb = np.empty(w, dtype=np.int32)
    for a in range(segments.shape[0]):
        for u in range(w):
            cb[u] = np.int32(np.rint(col_bias[a, u]))
        su = step_u[a]
        for v in range(h):
            b = np.int32(np.rint(row_bias[a, y0 + v]))
            i = base[a] + v * step_v[a]
            src = segments[a, y0 + v, x0:x1]
            if su == 1:  # rows run along the output's rows: contiguous slices, which vectorise
                dst = flat[i : i + w]
                for u in range(w):
                    dst[u] = src[u] - b - cb[u]
            elif su == -1:
                dst = flat[i - w + 1 : i + 1]
                for u in range(w):
                    dst[w - 1 - u] = src[u] - b - cb[u]
            else:  # a quarter-turned detector: rows run down the output's columns
                for u in range(w):
                    flat[i] = src[u] - b - cb[u]
                    i += su


@ngjit
def _add(s, c, v):
    """s + v, c + 1 unless v is NaN."""
    return (s + v, c + 1) if v == v else (s, c)


@ngjit
def _mean2(a, xa, b, xb, n_rows, n_cols, s, c):
    """Add a[xa], a[xa + 1], b[xb], b[xb + 1] (as many as n_rows x n_cols) to s, c, skipping
    NaN; always in that order, so that every path sums alike."""
    for r in range(n_rows):
        row = a if r == 0 else b
        x = xa if r == 0 else xb
        for d in range(n_cols):
            s, c = _add(s, c, row[x + d])
    return s, c


@ngjit
def _mean4(a, b, x):
    """The mean of a[x], a[x + 1], b[x], b[x + 1] leaving out NaN (NaN if all are)."""
    s, c = _add(0.0, 0, a[x])
    s, c = _add(s, c, a[x + 1])
    s, c = _add(s, c, b[x])
    s, c = _add(s, c, b[x + 1])
    return s / c if c > 0 else np.nan


@ngjit
def _edge_mean(a, b, x, n_rows, n_cols):
    """``_mean4`` of what an odd edge has: n_rows x n_cols values from x."""
    s, c = _mean2(a, x, b, x, n_rows, n_cols, 0.0, 0)
    return s / c if c > 0 else np.nan


@ngjit
def _mean_row(src, j, o):
    """Row j of ``downsample2``'s output into ``o``."""
    ny, nx = src.shape
    hx = nx // 2
    a = src[2 * j]
    n_rows = 2 if 2 * j + 1 < ny else 1
    b = src[2 * j + 1] if n_rows == 2 else a
    if n_rows == 2:
        for i in range(hx):
            o[i] = _mean4(a, b, 2 * i)
    else:
        for i in range(hx):
            o[i] = _edge_mean(a, b, 2 * i, 1, 2)
    if nx % 2 == 1:
        o[hx] = _edge_mean(a, b, nx - 1, n_rows, 1)


@ngjit
def downsample2(src, out):
    """2 x 2 area mean ignoring NaN; odd edges average what they have; all-NaN gives NaN.

    Two source rows at a time without bounds checks in the inner loop (the edges apart): 2.5x
    faster than testing every neighbour, the same sums in the same order."""
    for j in range(out.shape[0]):
        _mean_row(src, j, out[j])


@ngjit
def bin_sum(src, off_x, off_y, factor, sums, counts):
    """Add src into factor x factor bins of a grid on which src's pixel (0, 0) sits at
    (off_x, off_y) (0 <= off < factor); NaN pixels are skipped."""
    ny, nx = src.shape
    bx = np.empty(nx, dtype=np.int64)
    for x in range(nx):
        bx[x] = (x + off_x) // factor
    for y in range(ny):
        by = (y + off_y) // factor
        row_s = sums[by]
        row_c = counts[by]
        for x in range(nx):
            v = src[y, x]
            if v == v:
                row_s[bx[x]] += v
                row_c[bx[x]] += 1


@ngjit
def _scaled4(a, b, sa, sb, x):
    """The mean of a[x] sa[x], a[x + 1] sa[x + 1], b[x] sb[x], b[x + 1] sb[x + 1]."""
    t = a[x] * sa[x] + a[x + 1] * sa[x + 1]
    t += b[x] * sb[x] + b[x + 1] * sb[x + 1]
    return t / 4.0


@ngjit
def _scaled_edge(a, b, sa, sb, x, two_rows):
    """The scaled mean of an odd last column: a[x] sa[x] (and b[x] sb[x] with ``two_rows``)."""
    t = a[x] * sa[x]
    if two_rows:
        t += b[x] * sb[x]
        return t / 2.0
    return t


@ngjit
def _scaled_row(src, row_block, col_scale, j, o):
    """Row j of ``downsample2_scaled``'s output into ``o``."""
    ny, nx = src.shape
    hx = nx // 2
    y0 = 2 * j
    y1 = y0 + 1 if y0 + 1 < ny else y0
    a = src[y0]
    b = src[y1]
    sa = col_scale[row_block[y0]]
    sb = col_scale[row_block[y1]]
    if y1 != y0:
        for i in range(hx):
            o[i] = _scaled4(a, b, sa, sb, 2 * i)
    else:
        for i in range(hx):
            x = 2 * i
            o[i] = (a[x] * sa[x] + a[x + 1] * sa[x + 1]) / 2.0
    if nx % 2 == 1:
        o[hx] = _scaled_edge(a, b, sa, sb, nx - 1, y1 != y0)


@ngjit
def downsample2_scaled(src, row_block, col_scale, out):
    """2 x 2 area mean of ``src[y, x] * col_scale[row_block[y], x]``: a per-amp factor (the
    gain, ADU to electrons) applied before binning, so a pixel that straddles two amps is still
    exact. Odd edges average what they have."""
    for j in range(out.shape[0]):
        _scaled_row(src, row_block, col_scale, j, out[j])


@ngjit
def downsample2_both(src, row_block, col_scale, out, scaled):
    """``downsample2`` into ``out`` and ``downsample2_scaled`` into ``scaled``, row pair by row
    pair: one pass over ``src`` instead of two (the same values to the bit)."""
    ny, nx = src.shape
    hx = nx // 2
    for j in range(out.shape[0]):
        if 2 * j + 1 >= ny:  # a last single row
            _mean_row(src, j, out[j])
            _scaled_row(src, row_block, col_scale, j, scaled[j])
            continue
        a = src[2 * j]
        b = src[2 * j + 1]
        sa = col_scale[row_block[2 * j]]
        sb = col_scale[row_block[2 * j + 1]]
        o = out[j]
        e = scaled[j]
        for i in range(hx):  # both from the same four loads (2 ms less than one after the other)
            o[i] = _mean4(a, b, 2 * i)
            e[i] = _scaled4(a, b, sa, sb, 2 * i)
        if nx % 2 == 1:
            o[hx] = _edge_mean(a, b, nx - 1, 2, 1)
            e[hx] = _scaled_edge(a, b, sa, sb, nx - 1, True)


@ngjit
def coarsen2_sum(a, out):
    """2 x 2 sums of ``a`` (even shape), always added in the order (0, 0), (0, 1), (1, 0),
    (1, 1): the overview's levels, the same to the bit whether made whole or block by block."""
    for j in range(out.shape[0]):
        r0 = a[2 * j]
        r1 = a[2 * j + 1]
        o = out[j]
        for i in range(out.shape[1]):
            o[i] = r0[2 * i] + r0[2 * i + 1] + r1[2 * i] + r1[2 * i + 1]


@ngjit
def bin_means(sums, counts, out):
    """``sums / counts`` as float32 where ``counts > 0``, NaN elsewhere (a bin no pixel fell in)."""
    for j in range(out.shape[0]):
        s = sums[j]
        n = counts[j]
        o = out[j]
        for i in range(out.shape[1]):  # branch-free, so it vectorises
            c = n[i]
            v = s[i] / max(c, 1)
            o[i] = v if c > 0 else np.nan
