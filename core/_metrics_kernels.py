"""Pure numba kernels of the per-amp health metrics (no I/O, no config; ``core.metrics`` wraps them).

Every kernel works on the raw segments ``(amp, row, col)`` in readout order and the per-row
overscan bias the ISR already computed (``core.isr.overscan_bias``), one amp after the other
(single-threaded: the ingest runs one CCD per process). Every kernel has a slow, obvious numpy
twin in ``tests/core/test_metrics.py``.

Integer data are summarised through histograms (exact medians and quantiles in linear time);
a data pixel's value is ``raw - rint(row_bias)``, exactly what level 0 of the store holds.
"""

from __future__ import annotations

import math

import numpy as np

from core._isr_kernels import median_from_hist, median_inplace
from core._jit import ngjit

MAX_HIST = 1 << 22  # widest value range summarised by a histogram (18-bit data: 2^18)
WINDOW = 1 << 14  # a first histogram spans this many values around a probe of the level
IQR_TO_SIGMA = 1.0 / 1.3489795003921634  # Gaussian sigma from the interquartile range


# ---------------------------------------------------------------------------------------------
# Histogram helpers


@ngjit
def _grouped_quantile(hist, lo, hi, n, q, c0=0):
    """Quantile of integer data seen as grouped: each value k spread evenly over
    [k - 0.5, k + 0.5) (unbiased for a smooth distribution, unlike the order statistics of
    integers: the IQR of data with a 5 ADU sigma would otherwise come out as 6 or 7 ADU).
    ``c0`` entries lie below the histogram."""
    target = q * n
    c = c0
    for i in range(lo, hi + 1):
        f = hist[i]
        if f > 0 and c + f >= target:
            return i - 0.5 + (target - c) / f
        c += f
    return hi + 0.5


@ngjit
def _inside(below, above, n, q_lo, q_hi):
    """Do the quantiles q_lo .. q_hi of n values fall inside a window that left ``below``
    values under it and ``above`` over it?"""
    return below < q_lo * n - 1 and above < (1.0 - q_hi) * n - 1


@ngjit
def _hist_stats(values_min, values_max, hist, n, out):
    """(median, grouped q25, grouped q75) of n integer values counted in
    hist[value - values_min]."""
    hi = values_max - values_min
    out[0] = median_from_hist(hist, 0, hi, n) + values_min
    out[1] = _grouped_quantile(hist, 0, hi, n, 0.25) + values_min
    out[2] = _grouped_quantile(hist, 0, hi, n, 0.75) + values_min


# ---------------------------------------------------------------------------------------------
# Serial overscan: bias level and read noise


@ngjit
def bias_level(segments, ox0, ox1, out):
    """Per amp, the median raw ADU of the serial overscan columns [ox0, ox1), all rows, the
    integers seen as grouped (``_grouped_quantile``: no half-ADU quantization)."""
    n_amp, ny, _ = segments.shape
    n = ny * (ox1 - ox0)
    window = np.zeros(WINDOW, dtype=np.int32)
    probe = np.empty(ox1 - ox0, dtype=np.float64)
    for a in range(n_amp):
        # one pass into a window around a probe of the middle row (the usual case) ...
        for x in range(ox0, ox1):
            probe[x - ox0] = segments[a, ny // 2, x]
        lo = np.int64(median_inplace(probe, ox1 - ox0)) - WINDOW // 2
        below = 0
        above = 0
        window[:] = 0
        for y in range(ny):
            for x in range(ox0, ox1):
                i = segments[a, y, x] - lo
                if i < 0:
                    below += 1
                elif i >= WINDOW:
                    above += 1
                else:
                    window[i] += 1
        if _inside(below, above, n, 0.5, 0.5):
            out[a] = _grouped_quantile(window, 0, WINDOW - 1, n, 0.5, below) + lo
            continue
        # ... or the whole range
        lo = segments[a, 0, ox0]
        hi = lo
        for y in range(ny):
            for x in range(ox0, ox1):
                v = segments[a, y, x]
                lo = min(lo, v)
                hi = max(hi, v)
        if np.int64(hi) - lo > MAX_HIST:  # garbage in the overscan: sort instead
            buf = np.empty(n, dtype=np.float64)
            i = 0
            for y in range(ny):
                for x in range(ox0, ox1):
                    buf[i] = segments[a, y, x]
                    i += 1
            out[a] = median_inplace(buf, n)
            continue
        hist = np.zeros(hi - lo + 1, dtype=np.int64)
        for y in range(ny):
            for x in range(ox0, ox1):
                hist[segments[a, y, x] - lo] += 1
        out[a] = _grouped_quantile(hist, 0, hi - lo, n, 0.5) + lo


@ngjit
def read_noise(segments, row_bias, ox0, ox1, box_rows, box_cols, out):
    """Per amp, the median over boxes of ``box_rows x box_cols`` serial-overscan pixels of their
    standard deviation (ddof 1) after the row bias is removed, corrected for the degree of
    freedom the row bias took (a mean over the ``m = ox1 - ox0`` columns):
    ``E[s^2] = sigma^2 (1 - (n - C) / ((n - 1) m))`` for ``n = R C`` pixels in ``C`` columns.

    Whole boxes only, from row 0 down and from column ``ox1`` leftwards (the columns farthest
    from the data, clear of any deferred charge)."""
    n_amp, ny, _ = segments.shape
    m = ox1 - ox0
    nbx = m // box_cols
    nby = ny // box_rows
    first = ox1 - nbx * box_cols
    n = box_rows * box_cols
    corr = 1.0 / math.sqrt(1.0 - (n - box_cols) / ((n - 1.0) * m))
    stds = np.empty(nbx * nby, dtype=np.float64)
    for a in range(n_amp):
        k = 0
        for by in range(nby):
            for bx in range(nbx):
                s = 0.0
                ss = 0.0
                for y in range(by * box_rows, (by + 1) * box_rows):
                    b = row_bias[a, y]
                    for x in range(first + bx * box_cols, first + (bx + 1) * box_cols):
                        d = segments[a, y, x] - b
                        s += d
                        ss += d * d
                var = (ss - s * s / n) / (n - 1)
                stds[k] = math.sqrt(max(var, 0.0))
                k += 1
        out[a] = median_inplace(stds, k) * corr


# ---------------------------------------------------------------------------------------------
# Bias shifts in the overscan row profile (eo_pipe's BiasShiftsTask, in numba)


@ngjit
def _slope(p, start, stop):
    """Least-squares slope of p[start:stop] against the row index."""
    n = stop - start
    sx = 0.0
    sy = 0.0
    for i in range(start, stop):
        sx += i
        sy += p[i]
    mx = sx / n
    my = sy / n
    num = 0.0
    den = 0.0
    for i in range(start, stop):
        num += (i - mx) * (p[i] - my)
        den += (i - mx) * (i - mx)
    return num / den if den > 0 else 0.0


@ngjit
def shift_profile(p, window, out):
    """``out[k]``: triangular-weighted mean of ``p[k : k + w]`` minus that of ``p[k - w : k]``
    (``w = window - 1``, weights ``w .. 1`` from the boundary out): eo_pipe's ``shift_kernel``
    convolution; a step of height J between rows k - 1 and k gives J at k. 0 where undefined.
    Linear time through prefix sums of ``p`` and ``t * p`` (``p`` centred first)."""
    ny = p.shape[0]
    w = window - 1
    norm = w * (w + 1) / 2.0
    mean = 0.0
    for t in range(ny):
        mean += p[t]
    mean /= ny
    s1 = np.zeros(ny + 1)
    s2 = np.zeros(ny + 1)
    for t in range(ny):
        q = p[t] - mean
        s1[t + 1] = s1[t] + q
        s2[t + 1] = s2[t] + t * q
    out[:] = 0.0
    for k in range(w, ny - w):  # as eo_pipe's zero padding
        after = (w + k) * (s1[k + w] - s1[k]) - (s2[k + w] - s2[k])
        before = (w - k + 1) * (s1[k] - s1[k - w]) + (s2[k] - s2[k - w])
        out[k] = (after - before) / norm


@ngjit
def highpass_noise(p, half_width, buf):
    """Robust sigma (1.4826 MAD) of ``p`` minus its centred running mean over
    ``2 * half_width + 1`` rows (truncated at the ends): the row-to-row bias noise."""
    ny = p.shape[0]
    s1 = np.zeros(ny + 1)
    for t in range(ny):
        s1[t + 1] = s1[t] + p[t]
    for k in range(ny):
        a = max(0, k - half_width)
        b = min(ny, k + half_width + 1)
        buf[k] = p[k] - (s1[b] - s1[a]) / (b - a)
    med = median_inplace(buf.copy(), ny)
    for k in range(ny):
        buf[k] = abs(buf[k] - med)
    return 1.4826 * median_inplace(buf, ny)


@ngjit
def bias_shifts(row_bias, window, noise_half_width, threshold, skip_rows, count, max_shift, noise):
    """Per amp: jumps in the overscan row profile ``row_bias[a]``.

    Runs of rows where ``|shift_profile| > threshold * noise`` (the high-pass row noise), after
    the first ``skip_rows``; each run's peak is a shift if the profile is flat enough on both
    sides (eo_pipe's ``satisfies_flatness``: the linear trend over ``window`` rows before and
    after, times ``2 * window``, is smaller than the shift, in its direction).
    """
    n_amp, ny = row_bias.shape
    p = np.empty(ny, dtype=np.float64)
    conv = np.empty(ny, dtype=np.float64)
    buf = np.empty(ny, dtype=np.float64)
    for a in range(n_amp):
        for k in range(ny):
            p[k] = row_bias[a, k]
        sigma = highpass_noise(p, noise_half_width, buf)
        noise[a] = sigma
        count[a] = 0
        max_shift[a] = 0.0
        if sigma <= 0.0:
            sigma = 1e-6
        shift_profile(p, window, conv)
        k = skip_rows
        while k < ny:
            if abs(conv[k]) <= threshold * sigma:
                k += 1
                continue
            start = k
            while k < ny and abs(conv[k]) > threshold * sigma:
                k += 1
            peak = start
            for i in range(start, k):
                if abs(conv[i]) > abs(conv[peak]):
                    peak = i
            mag = conv[peak]
            if peak - window < 0 or peak + window > ny:
                continue
            pre = _slope(p, peak - window, peak) * 2 * window
            post = _slope(p, peak, peak + window) * 2 * window
            if mag > 0:
                flat = pre < mag and post < mag
            else:
                flat = pre > mag and post > mag
            if flat:
                count[a] += 1
                if abs(mag) > max_shift[a]:
                    max_shift[a] = abs(mag)


# ---------------------------------------------------------------------------------------------
# Charge transfer inefficiency by extended pixel edge response (EPER)


@ngjit
def eper(
    segments, row_bias, x0, x1, y0, y1, n_over, noise_adu, min_signal, s_cti, s_err, p_cti, p_err
):
    """Per amp, serial and parallel CTI by EPER, with their read-noise errors.

    Serial: mean over data rows ``[y0, y1)`` of the charge above the row bias in the first ``n_over`` serial
    overscan columns, over the mean of the last data column, over ``N + 1`` with ``N = x1`` the
    serial transfers (prescan + data columns). Parallel: the same with the first ``n_over``
    parallel overscan rows, the last data row and ``N = y1`` rows, averaged over data columns.
    NaN when the last column (row) holds less than ``min_signal`` ADU: nothing to defer.
    """
    n_amp, ny, nx = segments.shape
    for a in range(n_amp):
        sig = 0.0
        dfr = 0.0
        for y in range(y0, y1):
            b = row_bias[a, y]
            sig += segments[a, y, x1 - 1] - b
            for k in range(n_over):
                dfr += segments[a, y, x1 + k] - b
        sig /= y1 - y0
        dfr /= y1 - y0
        if sig >= min_signal:
            s_cti[a] = dfr / (sig * (x1 + 1))
            s_err[a] = noise_adu[a] * math.sqrt(n_over / (y1 - y0)) / (sig * (x1 + 1))
        else:
            s_cti[a] = np.nan
            s_err[a] = np.nan
        n_cols = x1 - x0
        b_last = row_bias[a, y1 - 1]
        sig = 0.0
        dfr = 0.0
        for u in range(x0, x1):
            sig += segments[a, y1 - 1, u] - b_last
        for k in range(n_over):
            b = row_bias[a, y1 + k]
            for u in range(x0, x1):
                dfr += segments[a, y1 + k, u] - b
        sig /= n_cols
        dfr /= n_cols
        if sig >= min_signal:
            p_cti[a] = dfr / (sig * (y1 + 1))
            p_err[a] = noise_adu[a] * math.sqrt(n_over / n_cols) / (sig * (y1 + 1))
        else:
            p_cti[a] = np.nan
            p_err[a] = np.nan


# ---------------------------------------------------------------------------------------------
# The data region: level, noise, saturation, bright and dark pixels and columns


@ngjit
def data_sample(segments, row_bias, x0, x1, y0, y1, row_step, stats):
    """Per amp, over the data rows ``y0, y0 + row_step, ...`` (values ``raw - rint(row_bias)``):
    ``stats[a] = (median, q25, q75, min, max)``, the quartiles of the data seen as grouped
    (``_grouped_quantile``)."""
    n_amp = segments.shape[0]
    rows = (y1 - y0 + row_step - 1) // row_step
    n = rows * (x1 - x0)
    q = np.empty(3, dtype=np.float64)
    window = np.zeros(WINDOW, dtype=np.int32)
    probe = np.empty(x1 - x0, dtype=np.float64)
    for a in range(n_amp):
        # one pass into a window around a probe of the middle row (the usual case) ...
        ym = (y0 + y1) // 2
        bm = np.rint(row_bias[a, ym])
        for x in range(x0, x1):
            probe[x - x0] = segments[a, ym, x] - bm
        wlo = np.int64(median_inplace(probe, x1 - x0)) - WINDOW // 2
        below = 0
        above = 0
        lo = np.int64(segments[a, y0, x0]) - np.int64(np.rint(row_bias[a, y0]))
        hi = lo
        window[:] = 0
        for y in range(y0, y1, row_step):
            b = np.int64(np.rint(row_bias[a, y]))
            for x in range(x0, x1):
                d = segments[a, y, x] - b
                lo = min(lo, d)
                hi = max(hi, d)
                i = d - wlo
                if i < 0:
                    below += 1
                elif i >= WINDOW:
                    above += 1
                else:
                    window[i] += 1
        stats[a, 3] = lo
        stats[a, 4] = hi
        if _inside(below, above, n, 0.25, 0.75):
            stats[a, 0] = median_from_hist(window, 0, WINDOW - 1, n, below) + wlo
            stats[a, 1] = _grouped_quantile(window, 0, WINDOW - 1, n, 0.25, below) + wlo
            stats[a, 2] = _grouped_quantile(window, 0, WINDOW - 1, n, 0.75, below) + wlo
            continue
        # ... or the whole range
        lo = np.int64(segments[a, y0, x0]) - np.int64(np.rint(row_bias[a, y0]))
        hi = lo
        for y in range(y0, y1, row_step):
            b = np.int64(np.rint(row_bias[a, y]))
            for x in range(x0, x1):
                d = segments[a, y, x] - b
                lo = min(lo, d)
                hi = max(hi, d)
        if hi - lo > MAX_HIST:  # garbage: sort instead
            buf = np.empty(n, dtype=np.float64)
            i = 0
            for y in range(y0, y1, row_step):
                b = np.int64(np.rint(row_bias[a, y]))
                for x in range(x0, x1):
                    buf[i] = segments[a, y, x] - b
                    i += 1
            buf.sort()
            stats[a, 0] = np.median(buf)
            stats[a, 1] = np.percentile(buf, 25.0)
            stats[a, 2] = np.percentile(buf, 75.0)
        else:
            hist = np.zeros(hi - lo + 1, dtype=np.int64)
            for y in range(y0, y1, row_step):
                b = np.int64(np.rint(row_bias[a, y])) + lo
                for x in range(x0, x1):
                    hist[segments[a, y, x] - b] += 1
            _hist_stats(lo, hi, hist, n, q)
            stats[a, 0] = q[0]
            stats[a, 1] = q[1]
            stats[a, 2] = q[2]
        stats[a, 3] = lo
        stats[a, 4] = hi


@ngjit
def data_constant(segments, row_bias, x0, x1, y0, y1, a):
    """Does amp ``a``'s data region hold one value only (``raw - rint(row_bias)``)?"""
    first = segments[a, y0, x0] - np.int64(np.rint(row_bias[a, y0]))
    for y in range(y0, y1):
        b = np.int64(np.rint(row_bias[a, y]))
        for x in range(x0, x1):
            if segments[a, y, x] - b != first:
                return False
    return True


@ngjit
def _local_median(values, half, out):
    """Running median over ``2 * half + 1`` entries, truncated at the ends."""
    n = values.shape[0]
    buf = np.empty(2 * half + 1, dtype=np.float64)
    for i in range(n):
        a = max(0, i - half)
        b = min(n, i + half + 1)
        for j in range(a, b):
            buf[j - a] = values[j]
        out[i] = median_inplace(buf, b - a)


@ngjit
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@ngjit
def track_like(cv, cu, n, min_pixels, max_minor, min_elongation, max_rows, out, root):
    """Mark (``out[i] = True``) the pixels of 8-connected groups that look like cosmic-ray
    tracks: at least ``min_pixels``, thinner than ``max_minor`` px (rms across), at least
    ``min_elongation`` times longer than thick (rms along over rms across) and spanning fewer
    than ``max_rows`` rows (a longer thin group is a partial bright column). ``cv, cu`` (row, column) are sorted row-major; ``root[i]`` gets
    the index of a pixel that stands for the group of pixel ``i``."""
    parent = np.arange(n)
    prev_start = 0
    prev_end = 0
    row_start = 0
    for i in range(n):
        if i > 0 and cv[i] != cv[i - 1]:
            if cv[i] == cv[i - 1] + 1:
                prev_start = row_start
                prev_end = i
            else:
                prev_start = i
                prev_end = i
            row_start = i
        if i > row_start and cu[i - 1] == cu[i] - 1:
            ra = _find(parent, i)
            rb = _find(parent, i - 1)
            if ra != rb:
                parent[ra] = rb
        for j in range(prev_start, prev_end):
            du = cu[j] - cu[i]
            if -1 <= du <= 1:
                ra = _find(parent, i)
                rb = _find(parent, j)
                if ra != rb:
                    parent[ra] = rb
    cnt = np.zeros(n, dtype=np.int64)
    su = np.zeros(n)
    sv = np.zeros(n)
    suu = np.zeros(n)
    svv = np.zeros(n)
    suv = np.zeros(n)
    vmin = np.empty(n, dtype=np.int64)
    vmax = np.empty(n, dtype=np.int64)
    for i in range(n):
        r = _find(parent, i)
        if cnt[r] == 0:
            vmin[r] = cv[i]
        vmax[r] = cv[i]  # row-major: the last one seen is the lowest
        cnt[r] += 1
        su[r] += cu[i]
        sv[r] += cv[i]
        suu[r] += cu[i] * cu[i]
        svv[r] += cv[i] * cv[i]
        suv[r] += cu[i] * cv[i]
    for i in range(n):
        r = _find(parent, i)
        root[i] = r
        c = cnt[r]
        out[i] = False
        if c < min_pixels:
            continue
        mu = su[r] / c
        mv = sv[r] / c
        a = suu[r] / c - mu * mu
        d = svv[r] / c - mv * mv
        b = suv[r] / c - mu * mv
        t = math.sqrt(max((a - d) * (a - d) + 4 * b * b, 0.0))
        major = math.sqrt(max(0.5 * (a + d + t), 0.0))
        minor = math.sqrt(max(0.5 * (a + d - t), 0.0))
        out[i] = (
            minor < max_minor
            and major >= min_elongation * minor
            and vmax[r] - vmin[r] + 1 < max_rows
        )


@ngjit
def _hot_sharp(segments, row_bias, a, y, u, x0, w, y0, y1, b, med, ex, threshold, contrast):
    """A hot pixel, not a star: more than ``contrast`` times as far above the median as the
    median of its (up to 8) neighbours, and above that by more than ``threshold``. A star's
    neighbours hold 40-90 % of its peak (0.4 of it at FWHM 2 px), a lone hot pixel's or one in
    a loose cluster's are mostly sky; a wing pixel lifted by noise is not above its neighbours
    by ``threshold``."""
    vals = np.empty(8, dtype=np.float64)
    n = 0
    for dy in range(-1, 2):
        yy = y + dy
        if yy < y0 or yy >= y1:
            continue
        bb = np.rint(row_bias[a, yy])
        for dx in range(-1, 2):
            uu = u + dx
            if (dy == 0 and dx == 0) or uu < 0 or uu >= w:
                continue
            vals[n] = segments[a, yy, x0 + uu] - bb - med
            n += 1
    m = median_inplace(vals, n) if n > 0 else 0.0
    return ex > contrast * m and ex - m > threshold


@ngjit
def _row_sums(row, b, wl, wh, hb, ld, sat, col_sum):
    """Add one data row, winsorized to [wl, wh], into col_sum; does it hold a pixel that is
    bright (> hb), dark (< ld) or saturated (raw >= sat)? Branch-free, so it vectorizes."""
    rare = 0
    for u in range(row.shape[0]):
        d = row[u] - b
        col_sum[u] += min(max(d, wl), wh)
        rare |= (d > hb) | (d < ld) | (row[u] >= sat)
    return rare != 0


@ngjit
def defects(
    segments,
    row_bias,
    x0,
    x1,
    y0,
    y1,
    saturation,
    median,
    bright_threshold,
    dark_threshold,
    winsor,
    sharp,
    contrast,
    use_runs,
    min_run,
    col_sigma,
    col_half,
    border,
    cr_rows,
    max_coords,
    out,
):
    """Per amp: saturated, bright and dark pixels and columns in the data region, in one pass.

    Data pixel ``(u, v)`` (readout order) has value ``d = raw - rint(row_bias)``; ``median[a]``
    is the amp's. Pixels within ``border[a] = (first rows, first cols, last rows, last cols)``
    of the amp's sides on the CCD's outer edge are not searched (edge roll-off is not a defect).

    - saturated: raw ADU >= ``saturation[a]``.
    - bright: ``d - median > bright_threshold[a]``; with ``sharp`` only counted if also a hot
      pixel, not a star (``_hot_sharp`` with ``contrast``), and not in an 8-connected group of
      bright pixels holding saturated ones (a bright star, its bleed trail).
    - dark: ``d < dark_threshold[a]`` (NaN: not searched).
    - bright column: (``use_runs``) a run of >= ``min_run`` contiguous bright pixels; or a mean
      (pixels winsorized at median -/+ ``winsor[a]``) more than ``col_sigma`` robust sigmas above
      the running median of the ``2 col_half + 1`` columns around it, unless it holds saturated
      pixels (a bleed trail). Dark column: a run of >= ``min_run`` dark pixels.
    - cosmic-ray-like tracks of bright pixels (``track_like``, shorter than ``cr_rows`` rows;
      with ``sharp`` among the hot pixels) are left out of the runs and the counts; bright
      pixels in bright columns are not counted, nor dark pixels in dark columns.

    ``out[a] = (saturated, bright pixels, bright columns, dark pixels, dark columns, track px)``.
    """
    n_amp = segments.shape[0]
    w = x1 - x0
    col_sum = np.empty(w, dtype=np.int64)
    last_b = np.empty(w, dtype=np.int64)
    start_b = np.empty(w, dtype=np.int64)
    max_b = np.empty(w, dtype=np.int64)
    last_d = np.empty(w, dtype=np.int64)
    start_d = np.empty(w, dtype=np.int64)
    max_d = np.empty(w, dtype=np.int64)
    cnt_d = np.empty(w, dtype=np.int64)
    has_sat = np.empty(w, dtype=np.bool_)
    mean = np.empty(w, dtype=np.float64)
    local = np.empty(w, dtype=np.float64)
    excess = np.empty(w, dtype=np.float64)
    buf = np.empty(w, dtype=np.float64)
    bcol = np.empty(w, dtype=np.bool_)
    cv = np.empty(max_coords, dtype=np.int64)
    cu = np.empty(max_coords, dtype=np.int64)
    tl = np.empty(max_coords, dtype=np.bool_)
    hot = np.empty(max_coords, dtype=np.bool_)
    root = np.empty(max_coords, dtype=np.int64)
    saturated = np.empty(max_coords, dtype=np.bool_)
    star = np.empty(max_coords, dtype=np.bool_)
    cv2 = np.empty(max_coords, dtype=np.int64)
    cu2 = np.empty(max_coords, dtype=np.int64)
    big = np.int64(1) << 40
    for a in range(n_amp):
        med = median[a]
        tb = bright_threshold[a]
        do_dark = dark_threshold[a] == dark_threshold[a]
        # integer thresholds: d > hb is bright, d < ld is dark, r >= sat is saturated
        hb = np.int64(math.floor(med + bright_threshold[a]))
        ld = np.int64(math.ceil(dark_threshold[a])) if do_dark else -big
        sat = np.int64(math.ceil(saturation[a]))
        wl = np.int64(math.floor(med - winsor[a]))
        wh = np.int64(math.ceil(med + winsor[a]))
        r0 = y0 + border[a, 0]
        r1 = y1 - border[a, 2]
        u0 = border[a, 1]
        u1 = w - border[a, 3]
        h = r1 - r0
        col_sum[:] = 0
        last_b[:] = -2
        start_b[:] = 0
        max_b[:] = 0
        last_d[:] = -2
        start_d[:] = 0
        max_d[:] = 0
        cnt_d[:] = 0
        has_sat[:] = False
        n_b = 0
        n_sat = 0
        for y in range(y0, y1):
            b = np.int64(np.rint(row_bias[a, y]))
            row = segments[a, y, x0:x1]
            if not _row_sums(row, b, wl, wh, hb, ld, sat, col_sum):
                continue
            for u in range(w):
                r = row[u]
                d = r - b
                if not (d > hb or d < ld or r >= sat):
                    continue
                # the rare path
                if r >= sat:
                    n_sat += 1
                    has_sat[u] = True
                if y < r0 or y >= r1 or u < u0 or u >= u1:
                    continue
                if d > hb:
                    if n_b < max_coords:
                        cv[n_b] = y - y0
                        cu[n_b] = u
                        saturated[n_b] = r >= sat
                        hot[n_b] = not sharp or _hot_sharp(
                            segments,
                            row_bias,
                            a,
                            y,
                            u,
                            x0,
                            w,
                            y0,
                            y1,
                            b,
                            med,
                            d - med,
                            tb,
                            contrast,
                        )
                    n_b += 1
                elif d < ld:
                    cnt_d[u] += 1
                    if last_d[u] != y - 1:
                        start_d[u] = y
                    last_d[u] = y
                    max_d[u] = max(max_d[u], y - start_d[u] + 1)
        # cosmic-ray tracks among the bright pixels, then the runs of the others per column
        n_kept = min(n_b, max_coords)
        track_like(cv, cu, n_kept, 4, 0.9, 2.5, cr_rows, tl, root)
        last_b[:] = -2
        max_b[:] = 0
        for i in range(n_kept):
            if tl[i]:
                continue
            u = cu[i]
            if last_b[u] != cv[i] - 1:
                start_b[u] = cv[i]
            last_b[u] = cv[i]
            max_b[u] = max(max_b[u], cv[i] - start_b[u] + 1)
        # columns: winsorized means against their neighbours'
        for u in range(w):
            mean[u] = col_sum[u] / (y1 - y0)
        _local_median(mean, col_half, local)
        for u in range(w):
            excess[u] = mean[u] - local[u]
            buf[u] = excess[u]
        mid = median_inplace(buf, w)
        for u in range(w):
            buf[u] = abs(excess[u] - mid)
        sig_c = max(1.4826 * median_inplace(buf, w), winsor[a] / 3.0 / math.sqrt(y1 - y0))
        n_bcol = 0
        n_dcol = 0
        n_dpix = 0
        for u in range(w):
            inside = u0 <= u < u1 and h > 0
            bc = inside and (
                (use_runs and max_b[u] >= min_run)
                or ((not has_sat[u]) and excess[u] - mid > col_sigma * sig_c)
            )
            bcol[u] = bc
            if bc:
                n_bcol += 1
            if do_dark:
                if max_d[u] >= min_run:
                    n_dcol += 1
                else:
                    n_dpix += cnt_d[u]
        # bright pixels: not in bright columns, not in cosmic-ray tracks. With ``sharp`` only the
        # hot ones, not in a group holding saturated pixels (a bright star, its bleed trail), and
        # the tracks are looked for among the hot pixels alone (a cosmic ray crossing a star is
        # then cut off the star, whose pixels are not hot)
        n_track = 0
        n_hot = 0
        if not sharp:
            for i in range(n_kept):
                if tl[i]:
                    n_track += 1
                elif not bcol[cu[i]]:
                    n_hot += 1
        else:
            for i in range(n_kept):
                star[root[i]] = False
            for i in range(n_kept):
                if saturated[i]:
                    star[root[i]] = True
            j = 0
            for i in range(n_kept):
                if hot[i] and not star[root[i]]:
                    cv2[j] = cv[i]
                    cu2[j] = cu[i]
                    j += 1
            track_like(cv2, cu2, j, 4, 0.9, 2.5, cr_rows, tl, root)
            for i in range(j):
                if tl[i]:
                    n_track += 1
                elif not bcol[cu2[i]]:
                    n_hot += 1
        out[a, 0] = n_sat
        out[a, 1] = n_hot + (n_b - n_kept)
        out[a, 2] = n_bcol
        out[a, 3] = n_dpix if do_dark else np.nan
        out[a, 4] = n_dcol if do_dark else np.nan
        out[a, 5] = n_track


# ---------------------------------------------------------------------------------------------
# Divisadero tearing (flats)


@ngjit
def divisadero(segments, row_bias, x0, x1, y0, y1, median, clip, row_lo, row_hi, nedge, edges, out):
    """Per amp, the largest |column response - 1| in the two columns at each amp edge used
    (``edges[a] = (first columns, last columns)`` in readout order).

    Column response: the mean over raw rows ``[y0 + row_lo, y0 + row_hi)`` (the rows read first,
    nearest the serial register) of the pixels within ``median[a] -/+ clip[a]``, over the median
    of those column means, divided by a straight line fitted to columns ``[nedge, w - nedge)``
    (eotest's ``normed_mean_response_vscol``, per amp).
    """
    n_amp = segments.shape[0]
    w = x1 - x0
    r0 = y0 + row_lo
    r1 = min(y0 + row_hi, y1)
    col = np.empty(w, dtype=np.float64)
    buf = np.empty(w, dtype=np.float64)
    for a in range(n_amp):
        if not (edges[a, 0] or edges[a, 1]):
            out[a] = np.nan
            continue
        lo = median[a] - clip[a]
        hi = median[a] + clip[a]
        for u in range(w):
            s = 0.0
            c = 0
            for y in range(r0, r1):
                d = segments[a, y, x0 + u] - np.rint(row_bias[a, y])
                if lo <= d <= hi:
                    s += d
                    c += 1
            col[u] = s / c if c > 0 else np.nan
        n = 0
        for u in range(w):
            if col[u] == col[u]:
                buf[n] = col[u]
                n += 1
        norm = median_inplace(buf, n)
        if not (norm > 0):
            out[a] = np.nan
            continue
        # straight-line fit of col / norm over the central columns
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        sxy = 0.0
        m = 0
        for u in range(nedge, w - nedge):
            v = col[u] / norm
            if v == v:
                sx += u
                sy += v
                sxx += u * u
                sxy += u * v
                m += 1
        den = m * sxx - sx * sx
        slope = (m * sxy - sx * sy) / den if den != 0 else 0.0
        icpt = (sy - slope * sx) / m if m > 0 else 1.0
        worst = 0.0
        for e in range(2):
            if not edges[a, e]:
                continue
            for k in range(2):
                u = k if e == 0 else w - 1 - k
                v = col[u] / norm / (icpt + slope * u)
                if v == v and abs(v - 1.0) > worst:
                    worst = abs(v - 1.0)
        out[a] = worst
