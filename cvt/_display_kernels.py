"""Numba kernels of the display maths: the per-row work of ``cvt.display.build_transfers`` and
``Transfers.stacked`` over thousands of amps at once, without the interpreter lock (a Python
loop over 3,217 amps held it 0.3-1.7 s in a worker while the GUI thread waited for it).

Each kernel is the exact arithmetic of the numpy code it replaces (``np.linspace``, ``np.round``,
``np.percentile``'s linear method, ``np.unique``, ``np.interp``, numpy's pairwise sums), so results
are bit for bit the same; ``tests/cvt/test_display.py`` checks them against the per-amp loops. The
one exception is zscale's line fit, whose two dot products numpy leaves to BLAS: equal to the last
bit or two. Samples arrive packed: one array of every row's sorted finite values, with
``offsets[r]:offsets[r + 1]`` row ``r``.
"""

from __future__ import annotations

import math

import numpy as np

from core._jit import ngjit


@ngjit
def _rank(i, m):
    """``np.linspace(0.0, 1.0, m)[i]``."""
    if m < 2:
        return 0.0
    if i == m - 1:
        return 1.0
    return float(i) * (1.0 / (m - 1)) + 0.0


@ngjit
def thin_rows(values, offsets, ks, out, out_offsets):
    """Each row thinned to ``ks[r]`` evenly spaced order statistics (``display._thin``: whole if
    it has at most that many), into ``out[out_offsets[r]:]``."""
    for r in range(offsets.size - 1):
        a = offsets[r]
        size = offsets[r + 1] - a
        k = ks[r]
        o = out_offsets[r]
        if size <= k:
            for i in range(size):
                out[o + i] = values[a + i]
            continue
        step = float(size - 1) / (k - 1) if k > 1 else 0.0
        for i in range(k):
            if i == k - 1 and k > 1:
                pos = float(size - 1)
            else:
                pos = float(i) * step + 0.0
            out[o + i] = values[a + int(np.rint(pos))]


@ngjit
def percentile_rows(values, offsets, q_lo, q_hi, lo_out, hi_out):
    """``np.percentile(row, (q_lo * 100, q_hi * 100))`` (linear method) of each non-empty row."""
    for r in range(offsets.size - 1):
        a = offsets[r]
        n = offsets[r + 1] - a
        if n == 0:
            continue
        for which in range(2):
            q = q_lo if which == 0 else q_hi
            v = (n - 1) * q
            prev = math.floor(v)
            if v >= n - 1:
                ip = n - 1
                inx = n - 1
                gamma = v - (-1.0)
            elif v < 0:
                ip = 0
                inx = 0
                gamma = v - 0.0
            else:
                ip = int(prev)
                inx = ip + 1
                gamma = v - prev
            x0 = values[a + ip]
            x1 = values[a + inx]
            diff = x1 - x0  # in the values' type, as numpy
            if gamma >= 0.5:
                res = float(x1) - float(diff) * (1.0 - gamma)
            else:
                res = float(x0) + float(diff) * gamma
            if which == 0:
                lo_out[r] = res
            else:
                hi_out[r] = res


@ngjit
def equalise_rows(values, offsets, rows, lo, hi, lo_cmp, hi_cmp, n, xs, ys, starts, counts):
    """``display._equalise`` of each row in ``rows``: breakpoints into ``xs[starts[r]:]`` /
    ``ys``, their number into ``counts[r]``. ``lo_cmp`` / ``hi_cmp``: the limits in the values'
    type (what numpy compares the sample with)."""
    ranks = np.empty(max(n, 2))
    ranks_m = -1
    for j in range(rows.size):
        r = rows[j]
        a = offsets[r]
        b = offsets[r + 1]
        s = starts[r]
        lo_r = lo[r]
        hi_r = hi[r]
        # the sample is sorted: the values within the limits are one run
        row = values[a:b]
        i0 = a + np.searchsorted(row, lo_cmp[r], side="left")
        i1 = a + np.searchsorted(row, hi_cmp[r], side="right")
        size = i1 - i0
        if size < 2:
            xs[s], xs[s + 1], ys[s], ys[s + 1] = lo_r, hi_r, 0.0, 1.0
            counts[r] = 2
            continue
        m = min(n, size)
        if m != ranks_m:
            for i in range(m):
                ranks[i] = _rank(i, m)
            ranks_m = m
        # unique values of q = inside[round(rank * (size - 1))], their first and last ranks
        k = 1  # leave room for a leading lo
        first = 0
        span = float(size - 1)
        prev_q = float(values[i0 + int(np.rint(ranks[0] * span))])
        for i in range(1, m + 1):
            if i < m:
                qi = float(values[i0 + int(np.rint(ranks[i] * span))])
                if qi == prev_q:
                    continue
            xs[s + k] = prev_q
            ys[s + k] = 0.5 * (ranks[first] + ranks[i - 1])
            k += 1
            if i < m:
                first = i
                prev_q = qi
        nu = k - 1
        if nu < 2:
            xs[s], xs[s + 1], ys[s], ys[s + 1] = lo_r, hi_r, 0.0, 1.0
            counts[r] = 2
            continue
        if xs[s + 1] > lo_r:
            xs[s], ys[s] = lo_r, 0.0
            k0 = 0
        else:
            k0 = 1
        if xs[s + k - 1] < hi_r:
            xs[s + k], ys[s + k] = hi_r, 1.0
            k += 1
        if k0 == 1:  # no leading lo: shift left by one
            for i in range(1, k):
                xs[s + i - 1] = xs[s + i]
                ys[s + i - 1] = ys[s + i]
            k -= 1
        counts[r] = k


@ngjit
def interp_index_rows(rows, lo, hi, grid, xs, ys, starts, counts, tables):
    """For each row in ``rows``: ``_to_index(np.interp(lo + grid * (hi - lo), xs, ys))`` as
    float32, into ``tables[r, :grid.size]`` (the lookup tables of ``Transfers.stacked``)."""
    f254 = np.float32(254.0)
    f15 = np.float32(1.5)
    for j in range(rows.size):
        r = rows[j]
        s = starts[r]
        c = counts[r]
        d = hi[r] - lo[r]
        seg = 0
        for g in range(grid.size):
            x = lo[r] + grid[g] * d
            if np.isnan(x):
                y = x
            elif x < xs[s]:
                y = ys[s]
            elif x > xs[s + c - 1]:
                y = ys[s + c - 1]
            else:
                # largest seg with xs[seg] <= x (the grid is increasing: walk on)
                while seg + 1 < c and xs[s + seg + 1] <= x:
                    seg += 1
                while seg > 0 and xs[s + seg] > x:
                    seg -= 1
                if seg == c - 1 or xs[s + seg] == x:
                    y = ys[s + seg]
                else:
                    x0 = xs[s + seg]
                    x1 = xs[s + seg + 1]
                    y0 = ys[s + seg]
                    y1 = ys[s + seg + 1]
                    slope = (y1 - y0) / (x1 - x0)
                    y = slope * (x - x0) + y0
                    if np.isnan(y):
                        y = slope * (x - x1) + y1
                        if np.isnan(y) and y0 == y1:
                            y = y0
            t = np.float32(y)
            t = t * f254
            t = t + f15
            if np.isnan(t):
                tables[r, g] = 0
            else:
                tables[r, g] = np.uint8(t)


@ngjit
def _block_sum(a, lo, n):
    """numpy's sum of at most 128 float64 values: eight accumulators, then the rest in turn."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    whole = n - n % 8
    while i < whole:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@ngjit
def _pairwise_sum(a, lo, n):
    """``np.add.reduce(a[lo:lo + n])`` of float64 values: numpy's pairwise summation (blocks of
    at most 128, each halved part summed alone), so means and standard deviations are numpy's
    to the last bit. numpy's recursion, walked with a stack: numba cannot cache a recursive
    function (numba#6061: it crashes when loaded from the cache)."""
    if n <= 128:
        return _block_sum(a, lo, n)
    seg_lo = np.empty(128, dtype=np.int64)  # the tree is at most 64 deep: 2 children a level
    seg_n = np.empty(128, dtype=np.int64)
    split = np.zeros(128, dtype=np.bool_)
    sums = np.empty(128)
    seg_lo[0], seg_n[0] = lo, n
    top = 1
    done = 0
    while top > 0:
        t = top - 1
        m = seg_n[t]
        if m <= 128:
            sums[done] = _block_sum(a, seg_lo[t], m)
            done += 1
            top -= 1
        elif not split[t]:
            split[t] = True
            n2 = m // 2
            n2 -= n2 % 8
            seg_lo[top], seg_n[top], split[top] = seg_lo[t] + n2, m - n2, False
            seg_lo[top + 1], seg_n[top + 1], split[top + 1] = seg_lo[t], n2, False
            top += 2
        else:  # both halves summed
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            top -= 1
    return sums[0]


@ngjit
def _zscale(row, n_samples, contrast, max_reject, min_npixels, krej, max_iterations):
    """IRAF's zscale limits (``display.zscale_packed``) of one row of values (any order, NaN
    allowed): the steps of the numpy reference (``zscale_limits`` in tests/cvt/test_display.py)
    in the same order. Means and deviations are summed as numpy sums; the two dot products of
    the line fit (BLAS in numpy) pairwise too, so the slope may differ from numpy's in the last
    bits."""
    size = 0
    for i in range(row.size):
        if np.isfinite(row[i]):
            size += 1
    if size == 0:
        return 0.0, 1.0
    stride = int(max(1.0, size / n_samples))
    npix = min(n_samples, (size + stride - 1) // stride)
    samples = np.empty(npix)
    j = 0
    k = 0
    for i in range(row.size):
        if j == npix:
            break
        if np.isfinite(row[i]):
            if k % stride == 0:
                samples[j] = float(row[i])
                j += 1
            k += 1
    samples.sort()
    zmin = samples[0]
    zmax = samples[npix - 1]
    minpix = max(min_npixels, int(npix * max_reject))
    ngrow = max(1, int(npix * 0.01))
    # numpy's convolve(mode="same") with a box of ngrow: pixel i is grown over by the rejected
    # pixels in [i - before, i + after]
    after = (ngrow - 1) // 2
    before = ngrow - 1 - after
    good = np.ones(npix, dtype=np.bool_)
    bad = np.empty(npix, dtype=np.bool_)
    flat = np.empty(npix)
    xs = np.empty(npix)
    ys = np.empty(npix)
    ngood = npix
    last_ngood = npix + 1
    slope = 0.0
    fitted = False
    for _ in range(max_iterations):
        if ngood >= last_ngood or ngood < minpix:
            break
        # least-squares line through the good pixels
        m = 0
        for i in range(npix):
            if good[i]:
                xs[m] = float(i)
                ys[m] = samples[i]
                m += 1
        xm = _pairwise_sum(xs, 0, m) / m
        ym = _pairwise_sum(ys, 0, m) / m
        for i in range(m):
            dx = xs[i] - xm
            xs[i] = dx * dx
            ys[i] = dx * (ys[i] - ym)
        denom = _pairwise_sum(xs, 0, m)
        slope = _pairwise_sum(ys, 0, m) / denom if denom > 0 else 0.0
        intercept = ym - slope * xm
        fitted = True
        # reject beyond krej standard deviations of the good pixels' residuals
        m = 0
        for i in range(npix):
            flat[i] = samples[i] - (slope * float(i) + intercept)
            if good[i]:
                xs[m] = flat[i]
                m += 1
        mean = _pairwise_sum(xs, 0, m) / m
        for i in range(m):
            d = xs[i] - mean
            xs[i] = d * d
        threshold = krej * math.sqrt(_pairwise_sum(xs, 0, m) / m)
        for i in range(npix):
            bad[i] = (not good[i]) or flat[i] < -threshold or flat[i] > threshold
        # grow the rejected pixels (a running count of them over the window)
        inside = 0
        for i in range(min(after, npix - 1) + 1):
            inside += bad[i]
        last_ngood = ngood
        ngood = 0
        for i in range(npix):
            good[i] = inside == 0
            ngood += good[i]
            if i + after + 1 < npix:
                inside += bad[i + after + 1]
            if i - before >= 0:
                inside -= bad[i - before]
    if fitted and ngood >= minpix:
        if contrast > 0:
            slope /= contrast
        center = (npix - 1) // 2
        if npix % 2:
            median = samples[npix // 2]
        else:
            median = (samples[npix // 2 - 1] + samples[npix // 2]) / 2.0
        lo = median - (center - 1) * slope
        if lo > zmin:
            zmin = lo
        hi = median + (npix - center) * slope
        if hi < zmax:
            zmax = hi
    return zmin, zmax


@ngjit
def zscale_rows(
    values, offsets, n_samples, contrast, max_reject, min_npixels, krej, max_iterations,
    lo_out, hi_out,
):  # fmt: skip
    """``display.zscale_packed``: the zscale limits of each non-empty row (IRAF's iterative
    line fit)."""
    for r in range(offsets.size - 1):
        a = offsets[r]
        b = offsets[r + 1]
        if b > a:
            lo_out[r], hi_out[r] = _zscale(
                values[a:b], n_samples, contrast, max_reject, min_npixels, krej, max_iterations
            )


@ngjit
def gather_finite_rects(image, rects, out, offsets):
    """The finite pixels of each ``image[r0:r1, c0:c1]`` (rows of ``rects``), row by row (``a[
    np.isfinite(a)]`` of the slice), one rect after the other into ``out``; rect ``k``'s end
    into ``offsets[k + 1]`` (``offsets[0]`` is 0). ``out`` holds the rects' areas."""
    o = 0
    offsets[0] = 0
    for k in range(rects.shape[0]):
        for r in range(rects[k, 0], rects[k, 1]):
            for c in range(rects[k, 2], rects[k, 3]):
                v = image[r, c]
                if np.isfinite(v):
                    out[o] = v
                    o += 1
        offsets[k + 1] = o


@ngjit
def fill_labels(labels, rects):
    """``labels[r0:r1, c0:c1] = amp`` for each row ``(amp, r0, r1, c0, c1)`` of ``rects``, in
    turn (bounds within ``labels``)."""
    for k in range(rects.shape[0]):
        amp = rects[k, 0]
        for r in range(rects[k, 1], rects[k, 2]):
            for c in range(rects[k, 3], rects[k, 4]):
                labels[r, c] = amp


@ngjit
def stacked_index(data, labels, rows_of, lo, steps, tables, out):
    """``Transfers.apply_labels`` of an equalised stretch, pixel by pixel in float32 as numpy
    does it: the label's row, ``(x - lo) * steps + 0.5`` clipped to the table, NaN to its last
    column, then the table's entry."""
    last = tables.shape[1] - 1  # the NaN column
    top = np.float32(last - 1)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            row = rows_of[labels[i, j] + 1]
            q = (data[i, j] - lo[row]) * steps[row] + half
            if np.isnan(q):
                col = last
            else:
                if q < zero:
                    q = zero
                elif q > top:
                    q = top
                col = int(q)
            out[i, j] = tables[row, col]
