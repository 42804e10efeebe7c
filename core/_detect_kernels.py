"""Pure numba kernels of source detection (``core.detect``): no I/O, no config, single-threaded.

The ingest runs one CCD per worker thread, so nothing here uses ``prange``; ``nogil`` lets the
threads overlap. Every kernel has a slow, obvious numpy twin in ``tests/core/test_detect.py``.

Conventions: images are (row, column) with row 0 at the bottom; a pixel's centre is at integer
(x, y) = (column, row). A pixel is *bad* when it is NaN or masked; bad pixels take no part in the
background, count as zero in the filter and never belong to an object.
"""

from __future__ import annotations

import math

import numpy as np

from core._isr_kernels import median_inplace, quickselect  # one copy of the selection
from core._jit import ngjit

# Flag bits of ``Source.flags`` (also in ``core.detect``)
SATURATED = 1  # a pixel of the isophote is at or above the saturation level
EDGE = 2  # the isophote touches the image border or a bad pixel
BLENDED = 4  # the isophote holds more than one significant peak
NO_WINDOW = 8  # the windowed moments did not converge: position and shape are isophotal
TRUNCATED = 16  # the measurement window runs off the image or onto bad pixels

# Std of a normal distribution clipped at +-3 sigma, in sigmas: the clipped std is divided by it.
CLIP3_STD = 0.986577
HIST_HALF_RANGE = 8.0  # the histogram spans the first guess +- this many first-guess sigmas
HIST_BINS_PER_SIGMA = 100
SUBSAMPLE = 256  # about this many pixels of a cell give the first guess
WINDOW_Q = 16.0  # windowed moments use pixels within 4 sigma of the elliptical Gaussian weight


# ---------------------------------------------------------------------------------------------
# Small helpers


@ngjit
def _bad(image, mask, use_mask, y, x):
    v = image[y, x]
    return v != v or (use_mask and mask[y, x])


# ---------------------------------------------------------------------------------------------
# Background mesh


@ngjit
def _cell_stats(image, mask, use_mask, y0, y1, x0, x1, min_valid, integer, sub, hist, cum, out):
    """(level, rms) of one cell into ``out``; NaN when it has fewer than ``min_valid`` good
    pixels. See ``mesh_stats``."""
    out[0] = np.nan
    out[1] = np.nan
    area = (y1 - y0) * (x1 - x0)
    step = max(1, int(math.sqrt(area / SUBSAMPLE)))
    ns = 0
    for y in range(y0, y1, step):
        for x in range(x0, x1, step):
            if ns < sub.shape[0] and not _bad(image, mask, use_mask, y, x):
                sub[ns] = image[y, x]
                ns += 1
    if ns < 3:
        return
    # a first guess only: one selection each (the upper median), no averaging
    m0 = float(quickselect(sub, ns, ns // 2))
    for i in range(ns):
        sub[i] = abs(sub[i] - m0)
    s0 = 1.4826 * float(quickselect(sub, ns, ns // 2))
    nbins = hist.shape[0]
    if s0 > 0.0:
        w = s0 / HIST_BINS_PER_SIGMA
        lo = m0 - HIST_HALF_RANGE * s0
        if integer and w < 1.0:  # one bin per integer value, centred on it
            w = 1.0
            lo = math.floor(lo) - 0.5
            nbins = min(nbins, int(2.0 * HIST_HALF_RANGE * s0) + 3)
    else:
        w = 1.0
        lo = m0
    inv = 1.0 / w
    hist[:nbins] = 0
    ngood = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            v = image[y, x]
            if v != v or (use_mask and mask[y, x]):
                continue
            ngood += 1
            t = (v - lo) * inv
            if 0.0 <= t < nbins:
                hist[int(t)] += 1
    if ngood < min_valid:
        return
    if s0 <= 0.0:  # more than half the pixels share one value: saturated, dead or flat
        out[0] = m0
        out[1] = 0.0
        return
    # prefix sums of the counts and of their first two moments in bin-centre units
    for b in range(nbins):
        cb = b + 0.5
        cum[0, b + 1] = cum[0, b] + hist[b]
        cum[1, b + 1] = cum[1, b] + hist[b] * cb
        cum[2, b + 1] = cum[2, b] + hist[b] * cb * cb
    c = m0
    s = s0
    med = m0
    mean = m0
    for _ in range(30):
        b0 = max(int(math.ceil((c - 3.0 * s - lo) / w - 0.5)), 0)
        b1 = min(int(math.floor((c + 3.0 * s - lo) / w - 0.5)), nbins - 1)
        if b1 < b0:
            break
        n = cum[0, b1 + 1] - cum[0, b0]
        if n < 3:
            break
        m1 = (cum[1, b1 + 1] - cum[1, b0]) / n
        m2 = (cum[2, b1 + 1] - cum[2, b0]) / n
        mean = lo + w * m1
        var = max(m2 - m1 * m1, 0.0) * w * w
        # the median: the first bin where the count reaches n / 2, linearly inside it
        half = cum[0, b0] + 0.5 * n
        a = b0
        z = b1
        while a < z:
            mid = (a + z) // 2
            if cum[0, mid + 1] >= half:
                z = mid
            else:
                a = mid + 1
        inside = cum[0, a + 1] - cum[0, a]
        med = lo + (a + ((half - cum[0, a]) / inside if inside > 0 else 0.5)) * w
        s_new = math.sqrt(var) / CLIP3_STD
        done = abs(med - c) < 1e-4 * s and abs(s_new - s) < 1e-4 * s
        c = med
        s = s_new
        if done or s <= 0.0:
            break
    out[0] = 2.5 * med - 1.5 * mean if (mean - med) < 0.3 * s else med
    out[1] = s


@ngjit
def mesh_stats(image, mask, use_mask, ey, ex, min_valid, integer, level, rms):
    """Per cell [ey[j], ey[j+1]) x [ex[i], ex[i+1]): 3-sigma clipped background and rms.

    Start from the median and 1.4826 MAD of a regular subsample (about 256 pixels), clip at
    3 sigma around the median and iterate on a histogram of all good pixels (bins of sigma / 100,
    or of one value for integer data, over +- 8 sigma): the median and mean of the kept pixels,
    sigma = their std / 0.9866 (the std of a normal clipped at 3 sigma). The level is
    SExtractor's mode 2.5 median - 1.5 mean, or the median when the kept pixels are skewed
    ((mean - median) >= 0.3 sigma). A cell where most pixels share one value (MAD 0: saturated,
    dead) gets that value and rms 0; one with fewer than ``min_valid`` good pixels gets NaN.
    """
    sub = np.empty(4 * SUBSAMPLE, dtype=np.float64)
    nbins = int(2 * HIST_HALF_RANGE * HIST_BINS_PER_SIGMA)
    hist = np.zeros(nbins, dtype=np.int32)
    cum = np.zeros((3, nbins + 1), dtype=np.float64)
    out = np.empty(2, dtype=np.float64)
    for j in range(ey.shape[0] - 1):
        for i in range(ex.shape[0] - 1):
            _cell_stats(
                image, mask, use_mask, ey[j], ey[j + 1], ex[i], ex[i + 1], min_valid, integer,
                sub, hist, cum, out,
            )  # fmt: skip
            level[j, i] = out[0]
            rms[j, i] = out[1]


@ngjit
def fill_bad_cells(mesh):
    """Replace NaN cells by the mean of their good 8-neighbours, growing inwards; all-NaN -> 0."""
    nby, nbx = mesh.shape
    good = np.empty((nby, nbx), dtype=np.bool_)
    nbad = 0
    for j in range(nby):
        for i in range(nbx):
            good[j, i] = mesh[j, i] == mesh[j, i]
            if not good[j, i]:
                nbad += 1
    if nbad == nby * nbx:
        for j in range(nby):
            for i in range(nbx):
                mesh[j, i] = 0.0
        return
    while nbad > 0:
        filled = np.zeros((nby, nbx), dtype=np.bool_)
        for j in range(nby):
            for i in range(nbx):
                if good[j, i]:
                    continue
                s = 0.0
                c = 0
                for jj in range(max(j - 1, 0), min(j + 2, nby)):
                    for ii in range(max(i - 1, 0), min(i + 2, nbx)):
                        if good[jj, ii]:
                            s += mesh[jj, ii]
                            c += 1
                if c > 0:
                    mesh[j, i] = s / c
                    filled[j, i] = True
                    nbad -= 1
        for j in range(nby):
            for i in range(nbx):
                if filled[j, i]:
                    good[j, i] = True


@ngjit
def median3x3(mesh, out):
    """3 x 3 median of a mesh without NaN. Next to the mesh border the window shrinks to stay
    symmetric about its cell (1 x 3 along an edge, the cell alone at a corner), so that a
    linear gradient passes unchanged."""
    nby, nbx = mesh.shape
    buf = np.empty(9, dtype=np.float64)
    for j in range(nby):
        hj = min(1, j, nby - 1 - j)
        for i in range(nbx):
            hi = min(1, i, nbx - 1 - i)
            n = 0
            for jj in range(j - hj, j + hj + 1):
                for ii in range(i - hi, i + hi + 1):
                    buf[n] = mesh[jj, ii]
                    n += 1
            out[j, i] = median_inplace(buf, n)


@ngjit
def interp_line(mesh, j0, j1, t, i0, i1, tx, rowv, out):
    """One image row of the bilinear interpolation of ``mesh``: rows j0, j1 mixed by t, then
    columns i0[x], i1[x] mixed by tx[x]."""
    nbx = mesh.shape[1]
    for i in range(nbx):
        rowv[i] = (1.0 - t) * mesh[j0, i] + t * mesh[j1, i]
    for x in range(out.shape[0]):
        a = rowv[i0[x]]
        out[x] = a + tx[x] * (rowv[i1[x]] - a)


@ngjit
def interp_at(mesh, j0, j1, t, i0, i1, tx):
    """The bilinear interpolation of ``mesh`` at one pixel."""
    a = mesh[j0, i0] + tx * (mesh[j0, i1] - mesh[j0, i0])
    b = mesh[j1, i0] + tx * (mesh[j1, i1] - mesh[j1, i0])
    return a + t * (b - a)


@ngjit
def mesh_lines(mesh, ix0, ix1, tx, out):
    """Each mesh row interpolated along x to full resolution: out[j, x], float32."""
    for j in range(mesh.shape[0]):
        for x in range(out.shape[1]):
            a = mesh[j, ix0[x]]
            out[j, x] = a + tx[x] * (mesh[j, ix1[x]] - a)


@ngjit
def _blend_lines(lines, j0, j1, t, out):
    """out = (1 - t) lines[j0] + t lines[j1]: one image row of the bilinear interpolation."""
    t32 = np.float32(t)
    a = lines[j0]
    b = lines[j1]
    for x in range(out.shape[0]):
        out[x] = a[x] + t32 * (b[x] - a[x])


@ngjit
def interpolate(mesh, iy0, iy1, ty, ix0, ix1, tx, out):
    """The full-resolution bilinear interpolation of ``mesh`` (only for tests and display)."""
    rowv = np.empty(mesh.shape[1], dtype=np.float64)
    for y in range(out.shape[0]):
        interp_line(mesh, iy0[y], iy1[y], ty[y], ix0, ix1, tx, rowv, out[y])


# ---------------------------------------------------------------------------------------------
# Matched filter, threshold and run-length labelling in one pass over the rows


@ngjit
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@ngjit
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@ngjit
def _subtract_row(image, mask, use_mask, y, bline, pad, r):
    """pad[r + x] = image[y, x] - bline[x], or 0 on bad pixels."""
    for x in range(bline.shape[0]):
        v = image[y, x]
        d = np.float32(v) - bline[x]
        if v != v or (use_mask and mask[y, x]):
            d = np.float32(0.0)
        pad[r + x] = d


@ngjit
def _hconv(pad, g, h):
    """h[x] = sum_k g[k] pad[x + k]."""
    gk = g[0]
    for x in range(h.shape[0]):
        h[x] = gk * pad[x]
    for k in range(1, g.shape[0]):
        gk = g[k]
        for x in range(h.shape[0]):
            h[x] += gk * pad[x + k]


@ngjit
def _vconv(ring, g, yc, ny, out):
    """out[x] = sum_k g[k] row[yc - r + k][x] over the rows inside the image, rows taken from the
    ring buffer (row y lives in ring[y % len(g)])."""
    K = g.shape[0]
    r = (K - 1) // 2
    out[:] = 0.0
    for k in range(K):
        yy = yc - r + k
        if yy < 0 or yy >= ny:
            continue
        gk = g[k]
        h = ring[yy % K]
        for x in range(out.shape[0]):
            out[x] += gk * h[x]


@ngjit
def _row_runs(filt, tline, image, mask, use_mask, y, xs, xe):
    """Runs [xs[i], xe[i]) of good pixels of row y with filt > tline; returns their number."""
    nx = filt.shape[0]
    m = 0
    start = -1
    for x in range(nx):
        if filt[x] > tline[x] and not _bad(image, mask, use_mask, y, x):
            if start < 0:
                start = x
        elif start >= 0:
            xs[m] = start
            xe[m] = x
            m += 1
            start = -1
    if start >= 0:
        xs[m] = start
        xe[m] = nx
        m += 1
    return m


@ngjit
def _link_rows(run_x0, run_x1, parent, prev0, prev1, cur0, cur1):
    """Union the runs [cur0, cur1) of a row with the 8-adjacent runs [prev0, prev1) below."""
    p = prev0
    for c in range(cur0, cur1):
        c0 = run_x0[c]
        c1 = run_x1[c]
        while p < prev1 and run_x1[p] < c0:
            p += 1
        q = p
        while q < prev1 and run_x0[q] <= c1:
            _union(parent, c, q)
            q += 1


@ngjit
def detect_runs(
    image, mask, use_mask, level_lines, noise_lines, iy0, iy1, ty, g, normy, thresh,
    snr_out, keep_snr, run_y, run_x0, run_x1, parent, run_val,
):  # fmt: skip
    """Background-subtract, filter with the separable kernel g x g, threshold and label.

    One pass over the rows with a ring of ``len(g)`` horizontally filtered rows: no full-frame
    temporaries. The background of row y mixes rows iy0[y] and iy1[y] of ``level_lines`` (the
    mesh rows interpolated along x, ``mesh_lines``) by ty[y]. A pixel is detected when the filtered
    value exceeds ``thresh`` times the filtered noise, ``noise_lines`` (the rms times normx, the
    root sum of the squared kernel taps inside the image along x) mixed the same way, times
    normy[y], so that the threshold stays in sigmas at the border, and the pixel is good.
    Detected pixels are kept as runs (row, x0, x1 exclusive) joined 8-connected by union-find.
    With ``keep_snr`` the filtered signal-to-noise is written to ``snr_out`` (tests, display).

    The runs go to ``run_y``, ``run_x0``, ``run_x1`` and ``parent`` and the filtered S/N of
    their pixels, run after run, to ``run_val`` (``run_offsets`` says where each run starts).
    Returns (n_runs, n_pixels), or (-1, -1) when the arrays are too small.
    """
    ny, nx = image.shape
    K = g.shape[0]
    r = (K - 1) // 2
    g32 = g.astype(np.float32)
    pad = np.zeros(nx + 2 * r, dtype=np.float32)
    ring = np.zeros((K, nx), dtype=np.float32)
    filt = np.empty(nx, dtype=np.float32)
    tline = np.empty(nx, dtype=np.float32)
    bline = np.empty(nx, dtype=np.float32)
    th = np.float32(thresh)
    xs = np.empty(nx // 2 + 1, dtype=np.int64)
    xe = np.empty(nx // 2 + 1, dtype=np.int64)
    nval = 0
    n = 0
    prev0 = 0
    prev1 = 0
    for yin in range(ny + r):
        if yin < ny:
            _blend_lines(level_lines, iy0[yin], iy1[yin], ty[yin], bline)
            _subtract_row(image, mask, use_mask, yin, bline, pad, r)
            _hconv(pad, g32, ring[yin % K])
        yc = yin - r
        if yc < 0:
            continue
        _vconv(ring, g32, yc, ny, filt)
        _blend_lines(noise_lines, iy0[yc], iy1[yc], ty[yc], tline)
        fy = np.float32(normy[yc])
        for x in range(nx):
            sig = tline[x] * fy
            # no noise at all (a dead amp): nothing can be detected there
            tline[x] = th * sig if sig > 0 else np.float32(np.inf)
        if keep_snr:
            for x in range(nx):
                if _bad(image, mask, use_mask, yc, x):
                    snr_out[yc, x] = np.nan
                else:
                    snr_out[yc, x] = th * filt[x] / tline[x]
        m = _row_runs(filt, tline, image, mask, use_mask, yc, xs, xe)
        if m == 0:
            prev0 = prev1 = n
            continue
        if n + m > run_y.shape[0]:
            return -1, -1
        for i in range(m):
            run_y[n + i] = yc
            run_x0[n + i] = xs[i]
            run_x1[n + i] = xe[i]
            parent[n + i] = n + i
            if nval + xe[i] - xs[i] > run_val.shape[0]:
                return -1, -1
            for x in range(xs[i], xe[i]):
                run_val[nval] = thresh * filt[x] / tline[x]
                nval += 1
        if prev1 > prev0:
            _link_rows(run_x0, run_x1, parent, prev0, prev1, n, n + m)
        prev0 = n
        prev1 = n + m
        n += m
    return n, nval


@ngjit
def components(run_x0, run_x1, parent, minarea):
    """Group runs into objects of at least ``minarea`` pixels.

    Returns (order, offsets): the runs of object i are ``order[offsets[i]:offsets[i + 1]]``, in
    row order; objects are numbered by their lowest run.
    """
    n = parent.shape[0]
    area = np.zeros(n, dtype=np.int64)
    for i in range(n):
        root = _find(parent, i)
        area[root] += run_x1[i] - run_x0[i]
    label = np.full(n, -1, dtype=np.int64)
    nobj = 0
    for i in range(n):
        if parent[i] == i and area[i] >= minarea:
            label[i] = nobj
            nobj += 1
    counts = np.zeros(nobj + 1, dtype=np.int64)
    for i in range(n):
        lab = label[parent[i]]
        if lab >= 0:
            counts[lab + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    order = np.empty(offsets[-1], dtype=np.int64)
    for i in range(n):
        lab = label[parent[i]]
        if lab >= 0:
            order[fill[lab]] = i
            fill[lab] += 1
    return order, offsets


@ngjit
def run_offsets(run_x0, run_x1):
    """Where each run's pixels start in the run-pixel arrays (cumulative run lengths)."""
    n = run_x0.shape[0]
    off = np.empty(n + 1, dtype=np.int64)
    off[0] = 0
    for i in range(n):
        off[i + 1] = off[i] + run_x1[i] - run_x0[i]
    return off


# ---------------------------------------------------------------------------------------------
# Deblending


@ngjit
def _sift_down(vals, order, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and vals[order[child + 1]] < vals[order[child]]:
            child += 1
        if vals[order[child]] < vals[order[root]]:
            t = order[root]
            order[root] = order[child]
            order[child] = t
            root = child
        else:
            return


@ngjit
def _argsort_desc(vals, order):
    """order = the indices of vals from the largest down (heap sort; numba's argsort costs
    seconds to compile)."""
    n = vals.shape[0]
    for i in range(n):
        order[i] = i
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(vals, order, start, n)
    for end in range(n - 1, 0, -1):
        t = order[0]
        order[0] = order[end]
        order[end] = t
        _sift_down(vals, order, 0, end)


@ngjit
def _basins(grid, lab, w, h, idx, vals, min_prom, contrast, minarea, parent, peakv, area):
    """Persistence-based split of one object on its filtered signal-to-noise (as ToMATo).

    Pixels join, from the highest down, the basin of their highest already-joined 8-neighbour;
    where two basins meet at level v, the one with the lower peak survives only if its peak
    stands ``max(min_prom, contrast * other peak)`` above v and it already has ``minarea``
    pixels; otherwise it merges into the other. ``lab`` (bbox grid) gets each pixel's rank in
    the descending order; ``parent`` resolves ranks to their basin. Returns the basin count.
    """
    npix = idx.shape[0]
    rank_order = np.empty(npix, dtype=np.int64)
    _argsort_desc(vals, rank_order)
    roots = np.empty(8, dtype=np.int64)
    nbasin = 0
    for rank in range(npix):
        p = idx[rank_order[rank]]
        v = grid[p]
        by = p // w
        bx = p - by * w
        nr = 0
        best = -1
        bestv = -np.inf
        for dy in range(-1, 2):
            yy = by + dy
            if yy < 0 or yy >= h:
                continue
            for dx in range(-1, 2):
                xx = bx + dx
                if (dx == 0 and dy == 0) or xx < 0 or xx >= w:
                    continue
                q = yy * w + xx
                if lab[q] < 0:
                    continue
                r = _find(parent, lab[q])
                if grid[q] > bestv:
                    bestv = grid[q]
                    best = r
                seen = False
                for i in range(nr):
                    if roots[i] == r:
                        seen = True
                if not seen:
                    roots[nr] = r
                    nr += 1
        lab[p] = rank
        if nr == 0:
            parent[rank] = rank
            peakv[rank] = v
            area[rank] = 1
            nbasin += 1
            continue
        parent[rank] = best
        area[best] += 1
        for i in range(nr):
            r = roots[i]
            rb = _find(parent, best)
            r = _find(parent, r)
            if r == rb:
                continue
            if peakv[r] <= peakv[rb]:
                lo = r
                hi = rb
            else:
                lo = rb
                hi = r
            if peakv[lo] - v < max(min_prom, contrast * peakv[hi]) or area[lo] < minarea:
                parent[lo] = hi
                area[hi] += area[lo]
                nbasin -= 1
    return nbasin


@ngjit
def _count_peaks(grid, w, h, level):
    """Local maxima (over the 8-neighbours; ties go to the first in raster order) at or above
    ``level`` in the bbox grid (-inf outside the object)."""
    n = 0
    for by in range(h):
        for bx in range(w):
            v = grid[by * w + bx]
            if v < level:
                continue
            top = True
            for dy in range(-1, 2):
                yy = by + dy
                if yy < 0 or yy >= h:
                    continue
                for dx in range(-1, 2):
                    xx = bx + dx
                    if (dx == 0 and dy == 0) or xx < 0 or xx >= w:
                        continue
                    u = grid[yy * w + xx]
                    if u > v or (u == v and (dy < 0 or (dy == 0 and dx < 0))):
                        top = False
            if top:
                n += 1
    return n


@ngjit
def _fill_grid(run_y, run_x0, run_x1, run_val, voff, runs, xmin, ymin, w, grid):
    """The object's filtered S/N on its bounding-box grid (-inf elsewhere)."""
    for ri in runs:
        base = (run_y[ri] - ymin) * w - xmin
        for x in range(run_x0[ri], run_x1[ri]):
            grid[base + x] = run_val[voff[ri] + x - run_x0[ri]]


@ngjit
def count_peaks(
    run_y, run_x0, run_x1, run_val, order, offsets, xmin, ymin, w, h, level, max_box, out
):  # fmt: skip
    """Per object, the local maxima of the filtered S/N at or above ``level`` (0 for objects
    whose bounding box (xmin, ymin, w, h) exceeds ``max_box`` pixels)."""
    voff = run_offsets(run_x0, run_x1)
    big = 0
    for o in range(offsets.shape[0] - 1):
        if w[o] * h[o] <= max_box:
            big = max(big, w[o] * h[o])
    grid = np.empty(big, dtype=np.float32)
    for o in range(offsets.shape[0] - 1):
        out[o] = 0
        n = w[o] * h[o]
        if n > max_box:
            continue
        grid[:n] = -np.inf
        runs = order[offsets[o] : offsets[o + 1]]
        _fill_grid(run_y, run_x0, run_x1, run_val, voff, runs, xmin[o], ymin[o], w[o], grid)
        out[o] = _count_peaks(grid, w[o], h[o], level)


@ngjit
def split_object(
    run_y, run_x0, run_x1, run_val, voff, runs, xmin, ymin, w, h, min_prom, contrast, minarea,
    labels,
):  # fmt: skip
    """Persistence split of one object (``_basins``): ``labels`` (its bounding-box grid) gets
    each pixel's piece, 0, 1, ... (-1 outside the object); returns the number of pieces.
    ``voff`` is ``run_offsets(run_x0, run_x1)``."""
    grid = np.full(w * h, -np.inf, dtype=np.float32)
    _fill_grid(run_y, run_x0, run_x1, run_val, voff, runs, xmin, ymin, w, grid)
    npix = 0
    for ri in runs:
        npix += run_x1[ri] - run_x0[ri]
    idx = np.empty(npix, dtype=np.int64)
    vals = np.empty(npix, dtype=np.float32)
    m = 0
    for q in range(w * h):
        if grid[q] > -np.inf:
            idx[m] = q
            vals[m] = grid[q]
            m += 1
    rank = np.full(w * h, -1, dtype=np.int64)
    parent = np.empty(npix, dtype=np.int64)
    peakv = np.empty(npix, dtype=np.float32)
    area = np.zeros(npix, dtype=np.int64)
    _basins(grid, rank, w, h, idx, vals, min_prom, contrast, minarea, parent, peakv, area)
    piece = np.full(npix, -1, dtype=np.int64)
    npiece = 0
    for q in range(w * h):
        if rank[q] < 0:
            labels[q] = -1
            continue
        root = _find(parent, rank[q])
        if piece[root] < 0:
            piece[root] = npiece
            npiece += 1
        labels[q] = piece[root]
    return npiece


@ngjit
def piece_runs(run_y, run_x0, run_x1, runs, labels, xmin, ymin, w, npiece, oy, ox0, ox1, opiece):
    """The runs of the pieces of a split object, piece after piece, each in row order; returns
    how many (at most the object's pixel count, the size the outputs need)."""
    n = 0
    for c in range(npiece):
        for ri in runs:
            base = (run_y[ri] - ymin) * w - xmin
            start = -1
            for x in range(run_x0[ri], run_x1[ri] + 1):
                mine = x < run_x1[ri] and labels[base + x] == c
                if mine and start < 0:
                    start = x
                elif not mine and start >= 0:
                    oy[n] = run_y[ri]
                    ox0[n] = start
                    ox1[n] = x
                    opiece[n] = c
                    n += 1
                    start = -1
    return n


@ngjit
def split_objects(
    run_y, run_x0, run_x1, run_val, order, offsets, cand, xmin, ymin, w, h, min_prom, contrast,
    minarea, lab_off, labels, run_off, oy, ox0, ox1, opiece, npiece, nrun,
):  # fmt: skip
    """``split_object`` and ``piece_runs`` for each candidate object ``cand[c]``: its labels
    at ``labels[lab_off[c]:]``, its pieces' runs at ``run_off[c]:`` (``nrun[c]`` of them), and
    ``npiece[c]``; the runs are written only when there are two pieces or more."""
    voff = run_offsets(run_x0, run_x1)
    for c in range(cand.shape[0]):
        o = cand[c]
        runs = order[offsets[o] : offsets[o + 1]]
        n = w[o] * h[o]
        lab = labels[lab_off[c] : lab_off[c] + n]
        npiece[c] = split_object(
            run_y, run_x0, run_x1, run_val, voff, runs, xmin[o], ymin[o], w[o], h[o], min_prom,
            contrast, minarea, lab,
        )  # fmt: skip
        nrun[c] = 0
        if npiece[c] >= 2:
            r0 = run_off[c]
            nrun[c] = piece_runs(
                run_y, run_x0, run_x1, runs, lab, xmin[o], ymin[o], w[o], npiece[c],
                oy[r0:], ox0[r0:], ox1[r0:], opiece[r0:],
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Measurement


@ngjit
def windowed_moments(
    image, mask, use_mask, xc, yc, wxx, wyy, wxy, b0, bx, by, max_iter, tol, max_sigma,
    fam_box, fam_lab, own, out,
):  # fmt: skip
    """Adaptive (Gaussian-windowed) centroid and second moments, as SExtractor's XWIN and
    Bernstein & Jarvis (2002).

    The window is an elliptical Gaussian of covariance W centred at (xc, yc), cut at 4 sigma.
    From the weighted moments M and centroid offset d of the background-subtracted pixels
    (background ``b0 + bx dx + by dy`` around the start), a Gaussian object has covariance
    C = (M^-1 - W^-1)^-1 and centre offset C M^-1 d; W and the centre move there (or, when that
    is not defined, to 2 M and 2 d) until they stop moving. At the fixed point W = 2 M, the
    centre is the windowed centroid and W the object's Gaussian-equivalent covariance.

    For a piece of a blend (``fam_box[2] > 0``), pixels of the family's other pieces (in
    ``fam_lab``) are replaced by their mirror image through the centre, as SExtractor's
    MASK_TYPE CORRECT, or left out when that is not usable.

    ``out`` gets (x, y, xx, yy, xy); returns 0 when converged, 1 when not, and 2 when it failed
    (no positive flux, a degenerate shape or a run-away); +16 when the window was truncated.
    """
    ny, nx = image.shape
    fx0 = fam_box[0]
    fy0 = fam_box[1]
    fw = fam_box[2]
    fh = fam_box[3]
    foff = fam_box[4]
    x0 = xc
    y0 = yc
    status = 1
    trunc = 0
    for _ in range(max_iter):
        det = wxx * wyy - wxy * wxy
        if not (det > 0.0) or wxx <= 0.0 or wyy <= 0.0:
            status = 2
            break
        ia = wyy / det
        ib = -wxy / det
        ic = wxx / det
        s0 = 0.0
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
        trunc = 0
        hy = math.sqrt(WINDOW_Q * wyy)
        ylo = int(math.ceil(yc - hy))
        yhi = int(math.floor(yc + hy))
        if ylo < 0:
            ylo = 0
            trunc = 1
        if yhi > ny - 1:
            yhi = ny - 1
            trunc = 1
        for y in range(ylo, yhi + 1):
            dy = y - yc
            disc = (ib * dy) ** 2 - ia * (ic * dy * dy - WINDOW_Q)
            if disc < 0.0:
                continue
            sq = math.sqrt(disc)
            xlo = int(math.ceil(xc + (-ib * dy - sq) / ia))
            xhi = int(math.floor(xc + (-ib * dy + sq) / ia))
            if xlo < 0:
                xlo = 0
                trunc = 1
            if xhi > nx - 1:
                xhi = nx - 1
                trunc = 1
            if xhi < xlo:
                continue
            dx = xlo - xc
            # w(dx) = exp(-q/2) with q = ia dx^2 + 2 ib dx dy + ic dy^2, stepped along the row
            w = math.exp(-0.5 * (ia * dx * dx + 2.0 * ib * dx * dy + ic * dy * dy))
            ratio = math.exp(-0.5 * (ia * (2.0 * dx + 1.0) + 2.0 * ib * dy))
            step = math.exp(-ia)
            bkg_row = b0 + by * (y - y0) + bx * (xlo - x0)
            in_fam_row = fw > 0 and fy0 <= y < fy0 + fh
            for x in range(xlo, xhi + 1):
                v = image[y, x]
                val = v - bkg_row
                use = True
                if v != v or (use_mask and mask[y, x]):
                    trunc = 1
                    use = False
                elif in_fam_row and fx0 <= x < fx0 + fw:
                    lab = fam_lab[foff + (y - fy0) * fw + x - fx0]
                    if lab >= 0 and lab != own:
                        xm = int(round(2.0 * xc - x))
                        ym = int(round(2.0 * yc - y))
                        use = 0 <= xm < nx and 0 <= ym < ny
                        if use and fx0 <= xm < fx0 + fw and fy0 <= ym < fy0 + fh:
                            lm = fam_lab[foff + (ym - fy0) * fw + xm - fx0]
                            use = lm < 0 or lm == own
                        if use:
                            vm = image[ym, xm]
                            use = not (vm != vm or (use_mask and mask[ym, xm]))
                            val = vm - (b0 + by * (ym - y0) + bx * (xm - x0))
                if use:
                    wv = w * val
                    s0 += wv
                    sx += wv * dx
                    sy += wv * dy
                    sxx += wv * dx * dx
                    syy += wv * dy * dy
                    sxy += wv * dx * dy
                w *= ratio
                ratio *= step
                dx += 1.0
                bkg_row += bx
        if not (s0 > 0.0):
            status = 2
            break
        mx = sx / s0
        my = sy / s0
        mxx = sxx / s0 - mx * mx
        myy = syy / s0 - my * my
        mxy = sxy / s0 - mx * my
        mdet = mxx * myy - mxy * mxy
        if not (mdet > 0.0) or mxx <= 0.0 or myy <= 0.0:
            status = 2
            break
        # C^-1 = M^-1 - W^-1
        pa = myy / mdet - ia
        pb = -mxy / mdet - ib
        pc = mxx / mdet - ic
        pdet = pa * pc - pb * pb
        newton = pdet > 0.0 and pa > 0.0
        cxx = 0.0
        cyy = 0.0
        cxy = 0.0
        if newton:
            cxx = pc / pdet
            cyy = pa / pdet
            cxy = -pb / pdet
            newton = cxx + cyy < 4.0 * (wxx + wyy)
        if newton:
            # centre offset C M^-1 d
            ux = (myy * mx - mxy * my) / mdet
            uy = (mxx * my - mxy * mx) / mdet
            ddx = cxx * ux + cxy * uy
            ddy = cxy * ux + cyy * uy
        else:
            cxx = 2.0 * mxx
            cyy = 2.0 * myy
            cxy = 2.0 * mxy
            ddx = 2.0 * mx
            ddy = 2.0 * my
        xc += ddx
        yc += ddy
        change = (abs(cxx - wxx) + abs(cyy - wyy) + abs(cxy - wxy)) / (wxx + wyy)
        wxx = cxx
        wyy = cyy
        wxy = cxy
        if wxx + wyy > 2.0 * max_sigma * max_sigma or (xc - x0) ** 2 + (yc - y0) ** 2 > 4.0 * (
            wxx + wyy + 1.0
        ):
            status = 2
            break
        if abs(ddx) < tol and abs(ddy) < tol and change < tol:
            status = 0
            break
    out[0] = xc
    out[1] = yc
    out[2] = wxx
    out[3] = wyy
    out[4] = wxy
    return status + 16 * trunc


@ngjit
def _shape(xx, yy, xy, out):
    """(a, b, theta) of the covariance (xx, yy, xy): semi-axes in sigmas and the major axis
    angle counter-clockwise from +x, in (-pi/2, pi/2]."""
    half = 0.5 * (xx + yy)
    d = math.sqrt(0.25 * (xx - yy) ** 2 + xy * xy)
    out[0] = math.sqrt(max(half + d, 0.0))
    out[1] = math.sqrt(max(half - d, 0.0))
    out[2] = 0.5 * math.atan2(2.0 * xy, xx - yy)


@ngjit
def measure(
    image, mask, use_mask, sat, use_sat, level, rms, iy0, iy1, ty, ix0, ix1, tx,
    run_y, run_x0, run_x1, offsets, init_flags, obj_fam, fam_box, fam_lab, sigma0, max_iter,
    fx, fy, fflux, fflux_err, fpeak, fbkg, fnpix, fxx, fyy, fxy, fa, fb, ftheta, fflags,
):  # fmt: skip
    """Per object, on the background-subtracted unfiltered image: isophotal flux, its error
    (background noise only), peak, flags, and the windowed centroid and adaptive second
    moments (started at the isophotal barycentre with a round window of ``sigma0``); where those
    fail, the isophotal barycentre and moments. Object o has the runs [offsets[o], offsets[o+1])
    and starts with ``init_flags[o]``; pieces of blends name their family in ``obj_fam``."""
    ny, nx = image.shape
    nobj = offsets.shape[0] - 1
    shape = np.empty(3, dtype=np.float64)
    win = np.empty(5, dtype=np.float64)
    no_fam = np.zeros(5, dtype=np.int64)
    for o in range(nobj):
        flags = init_flags[o]
        flux = 0.0
        var = 0.0
        peak = -np.inf
        xpk = 0
        ypk = 0
        sw = 0.0
        swx = 0.0
        swy = 0.0
        swxx = 0.0
        swyy = 0.0
        swxy = 0.0
        npix = 0
        first = offsets[o]
        xr = float(run_x0[first])
        yr = float(run_y[first])
        for ri in range(offsets[o], offsets[o + 1]):
            y = run_y[ri]
            xa = run_x0[ri]
            xb = run_x1[ri]
            j0 = iy0[y]
            j1 = iy1[y]
            t = ty[y]
            if y == 0 or y == ny - 1 or xa == 0 or xb == nx:
                flags |= EDGE
            for x in range(xa, xb):
                raw = image[y, x]
                b = interp_at(level, j0, j1, t, ix0[x], ix1[x], tx[x])
                s = interp_at(rms, j0, j1, t, ix0[x], ix1[x], tx[x])
                v = raw - b
                flux += v
                var += s * s
                if v > peak:
                    peak = v
                    xpk = x
                    ypk = y
                if use_sat:
                    lim = sat[0, 0] if sat.shape[0] == 1 else sat[y, x]
                    if raw >= lim:
                        flags |= SATURATED
                if v > 0.0:
                    dx = x - xr
                    dy = y - yr
                    sw += v
                    swx += v * dx
                    swy += v * dy
                    swxx += v * dx * dx
                    swyy += v * dy * dy
                    swxy += v * dx * dy
            npix += xb - xa
            if flags & EDGE == 0:
                # bad pixels 8-adjacent to the run
                for yy in (y - 1, y + 1):
                    if 0 <= yy < ny:
                        for x in range(max(xa - 1, 0), min(xb + 1, nx)):
                            if _bad(image, mask, use_mask, yy, x):
                                flags |= EDGE
                                break
                if xa > 0 and _bad(image, mask, use_mask, y, xa - 1):
                    flags |= EDGE
                if xb < nx and _bad(image, mask, use_mask, y, xb):
                    flags |= EDGE
        if sw > 0.0:
            mx = swx / sw
            my = swy / sw
            xbar = xr + mx
            ybar = yr + my
            ixx = swxx / sw - mx * mx
            iyy = swyy / sw - my * my
            ixy = swxy / sw - mx * my
        else:
            xbar = float(xpk)
            ybar = float(ypk)
            ixx = 0.0
            iyy = 0.0
            ixy = 0.0
        if ixx * iyy - ixy * ixy < 1.0 / 144.0:  # single-row or -column objects (SExtractor)
            ixx += 1.0 / 12.0
            iyy += 1.0 / 12.0
        # the background near the object as a plane, for the window
        jx = min(max(int(round(xbar)), 0), nx - 1)
        jy = min(max(int(round(ybar)), 0), ny - 1)
        xa_ = max(jx - 4, 0)
        xb_ = min(jx + 4, nx - 1)
        ya_ = max(jy - 4, 0)
        yb_ = min(jy + 4, ny - 1)
        b0 = interp_at(level, iy0[jy], iy1[jy], ty[jy], ix0[jx], ix1[jx], tx[jx])
        bxa = interp_at(level, iy0[jy], iy1[jy], ty[jy], ix0[xa_], ix1[xa_], tx[xa_])
        bxb = interp_at(level, iy0[jy], iy1[jy], ty[jy], ix0[xb_], ix1[xb_], tx[xb_])
        bya = interp_at(level, iy0[ya_], iy1[ya_], ty[ya_], ix0[jx], ix1[jx], tx[jx])
        byb = interp_at(level, iy0[yb_], iy1[yb_], ty[yb_], ix0[jx], ix1[jx], tx[jx])
        gx = (bxb - bxa) / (xb_ - xa_) if xb_ > xa_ else 0.0
        gy = (byb - bya) / (yb_ - ya_) if yb_ > ya_ else 0.0
        b_at = b0 + gx * (xbar - jx) + gy * (ybar - jy)
        if flags & SATURATED:
            # a clipped core and its bleed trail have no PSF shape to fit, and the window of a
            # big saturated star was most of a CCD's measuring time: isophotal moments instead
            st = 1
        else:
            st = windowed_moments(
                image, mask, use_mask, xbar, ybar, sigma0 * sigma0, sigma0 * sigma0, 0.0,
                b_at, gx, gy, max_iter, 1e-3, 30.0,
                fam_box[obj_fam[o]] if obj_fam[o] >= 0 else no_fam, fam_lab, o, win,
            )  # fmt: skip
        if st & 16:
            flags |= TRUNCATED
        if st & 15 == 0:
            fx[o] = win[0]
            fy[o] = win[1]
            fxx[o] = win[2]
            fyy[o] = win[3]
            fxy[o] = win[4]
        else:
            flags |= NO_WINDOW
            fx[o] = xbar
            fy[o] = ybar
            fxx[o] = ixx
            fyy[o] = iyy
            fxy[o] = ixy
        _shape(fxx[o], fyy[o], fxy[o], shape)
        fa[o] = shape[0]
        fb[o] = shape[1]
        ftheta[o] = shape[2]
        fflux[o] = flux
        fflux_err[o] = math.sqrt(var)
        fpeak[o] = peak
        jx = min(max(int(round(fx[o])), 0), nx - 1)
        jy = min(max(int(round(fy[o])), 0), ny - 1)
        fbkg[o] = interp_at(level, iy0[jy], iy1[jy], ty[jy], ix0[jx], ix1[jx], tx[jx])
        fnpix[o] = npix
        fflags[o] = flags
