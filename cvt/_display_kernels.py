"""Numba kernels of the display maths: the per-row work of ``cvt.display.build_transfers`` and
``Transfers.stacked`` over thousands of amps at once, without the interpreter lock (a Python
loop over 3,217 amps held it 0.3-1.7 s in a worker while the GUI thread waited for it).

Each kernel is the exact arithmetic of the numpy code it replaces (``np.linspace``, ``np.round``,
``np.percentile``'s linear method, ``np.unique``, ``np.interp``), so results are bit for bit the
same; ``tests/cvt/test_display.py`` checks them against the per-amp loops. Samples arrive packed:
one array of every row's sorted finite values, with ``offsets[r]:offsets[r + 1]`` row ``r``.
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
