"""cvt.display against slow, obvious references (no Qt)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvt import display as d

# ---------------------------------------------------------------------------------------------
# Slow references


def ref_curve(name: str, t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    if name == "linear":
        return t
    if name == "log":  # ds9: log10(a x + 1) / log10(a), a = 1000 (here normalised by a + 1)
        return math.log10(1000.0 * t + 1.0) / math.log10(1001.0)
    if name == "sqrt":
        return math.sqrt(t)
    if name == "asinh":
        return math.asinh(10.0 * t) / math.asinh(10.0)
    raise ValueError(name)


def ref_zscale(values, n_samples=1000, contrast=0.25, max_reject=0.5, min_npixels=5, krej=2.5):
    """IRAF's zsc_sample / zsc_fit_line / zscale, transliterated with plain Python loops."""
    flat = [float(v) for v in np.ravel(values) if math.isfinite(v)]
    stride = int(max(1.0, len(flat) / n_samples))
    sample = sorted(flat[::stride][:n_samples])
    npix = len(sample)
    zmin, zmax = sample[0], sample[-1]
    minpix = max(min_npixels, int(npix * max_reject))
    ngrow = max(1, int(npix * 0.01))
    bad = [False] * npix
    ngood, last = npix, npix + 1
    slope = intercept = 0.0
    fitted = False
    for _ in range(5):
        if ngood >= last or ngood < minpix:
            break
        xs = [i for i in range(npix) if not bad[i]]
        ys = [sample[i] for i in xs]
        xm, ym = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - xm) ** 2 for x in xs)
        slope = sum((x - xm) * (y - ym) for x, y in zip(xs, ys)) / sxx
        intercept = ym - slope * xm
        fitted = True
        resid = [sample[i] - (slope * i + intercept) for i in range(npix)]
        good_res = [resid[i] for i in range(npix) if not bad[i]]
        mean = sum(good_res) / len(good_res)
        sigma = math.sqrt(sum((r - mean) ** 2 for r in good_res) / len(good_res))
        thr = krej * sigma
        rejected = [bad[i] or abs(resid[i]) > thr for i in range(npix)]
        # grow: numpy's convolve(mode="same") with a box of ngrow: window [i - h, i + ngrow - 1 - h]
        h = (ngrow - 1) // 2
        grown = []
        for i in range(npix):
            lo, hi = i - (ngrow - 1 - h), i + h
            grown.append(any(rejected[j] for j in range(max(lo, 0), min(hi, npix - 1) + 1)))
        bad = grown
        last, ngood = ngood, npix - sum(bad)
    if fitted and ngood >= minpix:
        slope /= contrast
        center = (npix - 1) // 2
        s = sorted(sample)
        median = 0.5 * (s[(npix - 1) // 2] + s[npix // 2])
        zmin = max(zmin, median - (center - 1) * slope)
        zmax = min(zmax, median + (npix - center) * slope)
    return zmin, zmax


def zscale_limits(
    values: np.ndarray,
    n_samples: int = 1000,
    contrast: float = 0.25,
    max_reject: float = 0.5,
    min_npixels: int = 5,
    krej: float = 2.5,
    max_iterations: int = 5,
) -> tuple[float, float]:
    """IRAF's zscale: fit a line to the sorted sample, rejecting outliers iteratively; the limits
    are the median -/+ the fitted slope (divided by ``contrast``) over half the sample.

    Sampling and parameters as in IRAF ``display`` (and astropy's ``ZScaleInterval``): every
    ``size / n_samples``-th finite value. The numpy form the viewer used per amp, now the
    reference of its kernel (``display.zscale_packed``).
    """
    v = np.asarray(values).ravel()
    v = v[np.isfinite(v)].astype(np.float64)
    if v.size == 0:
        return (0.0, 1.0)
    stride = int(max(1.0, v.size / n_samples))
    samples = np.sort(v[::stride][:n_samples])
    npix = samples.size
    zmin, zmax = float(samples[0]), float(samples[-1])
    minpix = max(min_npixels, int(npix * max_reject))
    x = np.arange(npix, dtype=np.float64)
    good = np.ones(npix, dtype=bool)
    ngood, last_ngood = npix, npix + 1
    ngrow = max(1, int(npix * 0.01))
    slope = 0.0
    fitted = False
    for _ in range(max_iterations):
        if ngood >= last_ngood or ngood < minpix:
            break
        slope, intercept = _line_fit(x[good], samples[good])
        fitted = True
        flat = samples - (slope * x + intercept)
        threshold = krej * flat[good].std()
        bad = ~good | (flat < -threshold) | (flat > threshold)
        # grow rejected pixels by ngrow (a centred box, as numpy's convolve 'same')
        bad = np.convolve(bad, np.ones(ngrow), mode="same") > 0
        good = ~bad
        last_ngood, ngood = ngood, int(good.sum())
    if fitted and ngood >= minpix:
        if contrast > 0:
            slope /= contrast
        center = (npix - 1) // 2
        median = float(np.median(samples))
        zmin = max(zmin, median - (center - 1) * slope)
        zmax = min(zmax, median + (npix - center) * slope)
    return zmin, zmax


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line (slope, intercept)."""
    xm, ym = x.mean(), y.mean()
    dx = x - xm
    denom = float(dx @ dx)
    slope = float(dx @ (y - ym)) / denom if denom > 0 else 0.0
    return slope, float(ym - slope * xm)


def ref_midrank(sample, v) -> float:
    """Histogram equalisation: the mid-rank fraction of ``v`` among the sample."""
    n = len(sample)
    below = sum(1 for s in sample if s < v)
    at = sum(1 for s in sample if s == v)
    return (below + 0.5 * max(at - 1, 0)) / (n - 1)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "log", "sqrt", "asinh"])
def test_stretch_curves_match_reference(name):
    t = np.r_[-0.5, np.linspace(0, 1, 101), 1.7]
    got = d.stretch_curve(name, t)
    want = [ref_curve(name, float(x)) for x in t]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert got[1] == 0.0
    assert got[-2] == pytest.approx(1.0)
    assert np.all(np.diff(got) >= 0)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="stretch"):
        d.DisplaySettings(stretch="cubic")
    with pytest.raises(ValueError, match="colour map"):
        d.DisplaySettings(cmap="jet")
    with pytest.raises(ValueError, match="percentiles"):
        d.DisplaySettings(percentile=(99.0, 1.0))


def test_minmax_and_percentile_ignore_nan():
    rng = np.random.default_rng(1)
    v = rng.normal(100, 10, 5000)
    v[::97] = np.nan
    finite = v[np.isfinite(v)]
    assert d.minmax_limits(v) == (finite.min(), finite.max())
    lo, hi = d.percentile_limits(v, 0.5, 99.5)
    s = np.sort(finite)
    # the linear-interpolation percentile, written out
    for p, got in ((0.5, lo), (99.5, hi)):
        pos = p / 100 * (s.size - 1)
        i = math.floor(pos)
        want = s[i] + (pos - i) * (s[i + 1] - s[i])
        assert got == pytest.approx(want)
    assert d.minmax_limits(np.full(4, np.nan)) == (0.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zscale_matches_iraf_reference_and_astropy(seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(1000.0, 20.0, (300, 300))
    img[rng.integers(0, 300, 400), rng.integers(0, 300, 400)] += rng.exponential(5000, 400)
    img[:, 17] = 60000.0  # a hot column
    img[5:9, :] = np.nan
    got = zscale_limits(img)
    want = ref_zscale(img)
    assert got == pytest.approx(want, rel=1e-9)
    from astropy.visualization import ZScaleInterval

    assert got == pytest.approx(ZScaleInterval().get_limits(img), rel=1e-9)
    # the limits bracket the sky, not the outliers
    assert 900 < got[0] < 1000 < got[1] < 1150


def test_zscale_of_a_constant_and_of_too_few_pixels():
    assert zscale_limits(np.full(100, 5.0)) == (5.0, 5.0)
    assert zscale_limits(np.array([1.0, 2.0, 3.0])) == (1.0, 3.0)
    assert zscale_limits(np.array([np.nan])) == (0.0, 1.0)


def _zscale_cases(seed: int, count: int):
    """Samples of every shape zscale meets: sky, integer counts, dead and saturated amps, ramps,
    heavy tails, few values, NaN, float32 and float64, sorted or not, sizes around the
    1000-value subsample's strides."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 100, 199, 200, 257, 999, 1000, 1001, 1999, 2000,
             2001, 4096, 12_345]  # fmt: skip
    for i in range(count):
        n = sizes[i % len(sizes)] if i % 3 else int(rng.integers(1, 5000))
        kind = i % 9
        if kind == 0:
            x = rng.normal(1000.0, 20.0, n)
        elif kind == 1:
            x = np.round(rng.normal(1000.0, 5.0, n))  # integer counts, many ties
        elif kind == 2:
            x = np.full(n, 42.0)  # a dead amp
        elif kind == 3:
            x = rng.lognormal(3.0, 1.0, n)
        elif kind == 4:
            # a ramp, of a whole slope: the fit is exact, nothing rejected. (With a slope such as
            # 2.29 the residuals are rounding errors, and which of them exceed 2.5 sigma is
            # decided by the last bits: numpy's own result changes when its ``dx @ dx`` is
            # written ``np.sum(dx * dx)``, for one ramp in five at contrast 1.)
            x = np.arange(n, dtype=np.float64) * float(rng.integers(1, 50))
        elif kind == 5:
            x = rng.normal(0.0, 1.0, n)
            x[rng.random(n) < 0.3] = rng.exponential(1e4)  # stars and hot pixels
        elif kind == 6:
            x = np.r_[np.full(n // 2, 1e6), rng.normal(100.0, 3.0, n - n // 2)]  # saturated half
        elif kind == 7:
            x = rng.integers(0, 3, n).astype(np.float64)  # three values
        else:
            x = rng.normal(1e4, 1.0, n)  # a large offset
        if i % 4 == 0:
            x[rng.random(n) < 0.1] = np.nan
        if i % 10 == 9:
            x[:] = np.nan
        if i % 5 == 0:
            x = x.astype(np.float32)
        if i % 7 == 0:
            x = np.sort(x)
        yield x


def _close_limits(got, want, values) -> bool:
    """Equal, or within a few units in the last place of the data's scale (the line fit's dot
    products: BLAS in numpy, pairwise in the kernel)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    return all(g == w or abs(g - w) <= 1e-13 * max(abs(w), scale) for g, w in zip(got, want))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zscale_kernel_equals_the_numpy_reference(seed):
    cases = list(_zscale_cases(seed, 700))
    lo, hi = [], []
    for x in cases:  # one row at a time
        a, b = d.zscale_packed(x, np.array([0, x.size]))
        lo.append(a[0])
        hi.append(b[0])
    bad = [
        (i, (lo[i], hi[i]), zscale_limits(x))
        for i, x in enumerate(cases)
        if not _close_limits((lo[i], hi[i]), zscale_limits(x), x)
    ]
    assert not bad, bad[:5]
    # packed (one call, every row), as the viewer calls it, with other contrasts
    values = np.concatenate([x.astype(np.float64) for x in cases])
    offsets = np.r_[0, np.cumsum([x.size for x in cases])]
    for contrast in (0.25, 1.0, 0.0):
        lo, hi = d.zscale_packed(values, offsets, contrast)
        for i, x in enumerate(cases):
            want = zscale_limits(x, contrast=contrast)
            assert _close_limits((lo[i], hi[i]), want, x), (i, contrast, lo[i], hi[i], want)


def test_pairwise_sum_is_numpys():
    """The kernels' sum is numpy's to the last bit (its means and deviations feed zscale)."""
    from cvt._display_kernels import _pairwise_sum

    rng = np.random.default_rng(7)
    for n in [*range(300), 1000, 1001, 4095, 4096, 12_345]:
        a = rng.standard_normal(n) * 10 ** rng.uniform(-3, 6) + rng.uniform(-1e4, 1e4)
        padded = np.r_[np.zeros(3), a]
        assert _pairwise_sum(padded, 3, n) == np.sum(a), n


def test_zscale_kernel_edge_cases():
    """A constant, too few pixels, no finite value, an empty row: as the reference."""
    for x in (np.full(100, 5.0), np.array([1.0, 2.0, 3.0]), np.array([7.5]),
              np.array([np.nan]), np.array([np.inf, -np.inf, np.nan, 2.0]),
              np.array([3.0, np.nan, 1.0, 2.0, np.nan, 9.0, 4.0]), np.arange(5.0),
              np.arange(1000, dtype=np.int16)):  # fmt: skip
        lo, hi = d.zscale_packed(x, np.array([0, x.size]))
        assert (lo[0], hi[0]) == zscale_limits(x), x
    lo, hi = d.zscale_packed(np.arange(4.0), np.array([0, 0, 4, 4]))
    assert lo.tolist() == [0.0, 0.0, 0.0] and hi.tolist() == [1.0, 3.0, 1.0]  # empty rows: (0, 1)
    assert d.zscale_packed(np.full(100, 5.0), np.array([0, 100]))[0][0] == 5.0


def test_zscale_limits_of_many_amps_equal_the_reference():
    """``build_transfers`` with zscale limits (the kernel, for the packed rows and for a single
    sample alike) against ``zscale_limits`` per amp."""
    samples = _amp_samples(5)
    s = d.DisplaySettings(stretch="linear", limits="zscale", contrast=0.5)
    t = d.build_transfers(1, s, samples, np.arange(len(samples)) // 16)
    for i, sample in enumerate(samples):
        if not sample.size:
            continue
        want = zscale_limits(sample, contrast=0.5)
        if want[1] - want[0] > max(abs(want[0]), abs(want[1]), 1.0) * 1e-6:  # not degenerate
            assert _close_limits(t.limits(i), want, sample), (i, t.limits(i), want)
    one = d.transfer(samples[0], s)
    assert _close_limits((one.lo, one.hi), zscale_limits(samples[0], contrast=0.5), samples[0])


def test_sorted_sample_keeps_extremes_and_quantiles():
    rng = np.random.default_rng(3)
    v = rng.lognormal(3, 1, 100_000).astype(np.float32)
    v[::1000] = np.nan
    s = d.sorted_sample(v, 4096)
    assert s.size == 4096
    assert np.all(np.diff(s) >= 0)
    finite = v[np.isfinite(v)]
    assert s[0] == finite.min() and s[-1] == finite.max()
    for q in (10, 50, 90):
        assert np.percentile(s, q) == pytest.approx(np.percentile(finite, q), rel=0.01)
    assert d.sorted_sample(np.array([np.nan, np.nan])).size == 0


@pytest.mark.parametrize("size", [d.SAMPLE_SIZE, 100, 1])
def test_rect_samples_are_the_sorted_samples_of_each_rect(size):
    """``rect_samples`` (kernels and numpy's sort, the interpreter lock free) gives the very
    arrays ``sorted_sample`` gives for each rect: every rect shape, NaN, signed zeros,
    more rects than one batch."""
    rng = np.random.default_rng(11)
    img = rng.normal(1000.0, 30.0, (300, 400)).astype(np.float32)
    img[rng.random(img.shape) < 0.03] = np.nan
    img[:, 7] = np.inf  # sorted_sample drops every non-finite value
    img[40:60, 100:140] = 0.0
    img[40:60:3, 100:140:2] = -0.0
    img[200:230, 300:330] = np.nan  # a rect without statistics
    img[100:102, :] = np.round(img[100:102, :])  # ties
    rects = [(0, 300, 0, 400), (40, 60, 90, 150), (200, 230, 300, 330), (5, 5, 0, 10),
             (0, 1, 0, 1), (10, 12, 3, 9), (250, 300, 0, 400)]  # fmt: skip
    for _ in range(2 * d.RECT_BATCH + 13):
        r0, c0 = int(rng.integers(0, 290)), int(rng.integers(0, 390))
        rects.append((r0, r0 + int(rng.integers(0, 80)), c0, c0 + int(rng.integers(1, 90))))
    got = d.rect_samples(img, rects, size)
    assert len(got) == len(rects)
    for (r0, r1, c0, c1), g in zip(rects, got):
        want = d.sorted_sample(img[r0:r1, c0:c1], size)
        assert g.dtype == np.float32 and np.array_equal(g, want), (r0, r1, c0, c1)
        assert np.array_equal(np.signbit(g), np.signbit(want))
    assert d.rect_samples(img, [], size) == []


def test_histeq_transfer_is_the_midrank_cdf():
    rng = np.random.default_rng(4)
    sample = np.sort(rng.gamma(2.0, 50.0, 300)).astype(np.float32)
    sample[100:140] = sample[100]  # a run of equal values
    sample = np.sort(sample)
    fn = d.transfer(sample, d.DisplaySettings(stretch="histeq", limits="minmax"))
    assert fn.curve == "interp" and np.all(np.diff(fn.xs) > 0)
    for v in sample[::7]:
        assert fn(v) == pytest.approx(ref_midrank(list(sample), v), abs=1e-9)
    # the equalised values are uniform: every decile of the output holds ~10% of the pixels
    data = rng.gamma(2.0, 50.0, 50_000)
    sample = d.sorted_sample(data)
    out = d.transfer(sample, d.DisplaySettings(stretch="histeq"))(data)
    counts, _ = np.histogram(out, bins=10, range=(0, 1))
    assert counts.min() > 0.08 * data.size and counts.max() < 0.12 * data.size


def test_histeq_within_limits_clips_outside():
    sample = np.arange(1000, dtype=np.float32)
    s = d.DisplaySettings(stretch="histeq", limits="percentile", percentile=(10.0, 90.0))
    fn = d.transfer(sample, s)
    assert fn(50.0) == 0.0
    assert fn(950.0) == 1.0
    assert fn(500.0) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("stretch", ["linear", "log", "sqrt", "asinh"])
def test_apply_transfer_matches_per_pixel_reference(stretch):
    rng = np.random.default_rng(5)
    data = rng.normal(50, 30, (40, 50)).astype(np.float32)
    data[3, 4] = np.nan
    settings = d.DisplaySettings(stretch=stretch, limits="manual", manual=(10.0, 90.0))
    got = d.apply_transfer(data, d.transfer(np.sort(data[np.isfinite(data)]), settings))
    assert got.dtype == np.uint8
    for (r, c), v in np.ndenumerate(data):
        if not math.isfinite(v):
            assert got[r, c] == 0
            continue
        want = 1 + int(254 * ref_curve(stretch, (v - 10.0) / 80.0) + 0.5)
        assert abs(int(got[r, c]) - want) <= 1, (r, c, v)
    assert got[data <= 10].max() == 1
    assert got[data >= 90].min() == 255


def test_a_dead_amp_is_dark_whatever_the_stretch():
    sample = np.zeros(500, dtype=np.float32)
    for stretch in d.STRETCHES:
        for limits in ("minmax", "percentile", "zscale"):
            fn = d.transfer(sample, d.DisplaySettings(stretch=stretch, limits=limits))
            assert d.apply_transfer(np.zeros((3, 3), np.float32), fn).max() == 1


def test_scopes_and_apply_rects():
    # two amps of one CCD with different levels, and a second CCD
    a0 = np.linspace(0, 10, 1000)
    a1 = np.linspace(1000, 1010, 1000)
    a2 = np.linspace(500, 600, 1000)
    samples = [d.sorted_sample(x) for x in (a0, a1, a2)]
    amp_ccd = [0, 0, 1]
    tile = np.empty((4, 6), dtype=np.float32)
    tile[:, :3] = 10.0  # top of amp 0
    tile[:, 3:] = 1000.0  # bottom of amp 1
    rects = [(0, 0, 4, 0, 3), (1, 0, 4, 3, 6)]
    lin = d.DisplaySettings(stretch="linear", limits="minmax")
    per_amp = d.apply_rects(
        tile, rects, d.build_transfers(1, lin.with_(scope="amp"), samples, amp_ccd)
    )
    assert (per_amp[:, :3] == 255).all() and (per_amp[:, 3:] == 1).all()
    per_ccd = d.build_transfers(2, lin.with_(scope="ccd"), samples, amp_ccd)
    assert per_ccd.row(0) == per_ccd.row(1) == 0 and per_ccd.row(2) == 1
    out = d.apply_rects(tile, rects, per_ccd)
    assert (out[:, :3] == int(1.5 + 254 * 10 / 1010)).all()
    assert (out[:, 3:] == int(1.5 + 254 * 1000 / 1010)).all()
    glob = d.build_transfers(3, lin.with_(scope="global"), samples, amp_ccd)
    assert glob.limits() == (0.0, 1010.0)
    # pixels outside every rect use the global transfer; NaN stays "no data"
    tile[0, 0] = np.nan
    out = d.apply_rects(tile, [(1, 0, 4, 3, 6)], d.build_transfers(4, lin, samples, amp_ccd))
    assert out[0, 0] == 0 and out[1, 0] == int(1.5 + 254 * 10 / 1010)


def test_amp_without_statistics_uses_the_global_transfer():
    samples = [d.sorted_sample(np.arange(100.0)), np.empty(0, np.float32)]
    t = d.build_transfers(1, d.DisplaySettings(stretch="linear"), samples, [0, 0])
    assert t.row(1) == t.fallback and t.row(0) == 0 and t.row(99) == t.fallback


def test_stage_changed():
    s = d.DisplaySettings()
    assert s.stage_changed(s) is None
    assert s.with_(cmap="heat").stage_changed(s) == "cmap"
    assert s.with_(stretch="log").stage_changed(s) == "stretch"
    assert s.with_(scope="global", cmap="heat").stage_changed(s) == "stretch"


def test_colour_maps():
    assert len(d.COLORMAPS) >= 8
    for name in d.COLORMAPS:
        c = d.colormap(name)
        assert c.shape == (d.N_COLOURS, 3)
        assert c.min() >= 0 and c.max() <= 1
        lut = d.index_lut(name)
        assert lut.shape == (256, 4) and lut.dtype == np.uint8
        assert lut[0, 3] == 0 and (lut[1:, 3] == 255).all()
    # the published end points
    assert d.index_lut("viridis")[1, :3].tolist() == [68, 1, 84]
    assert d.index_lut("viridis")[255, :3].tolist() == [253, 231, 37]
    assert d.index_lut("heat")[255, :3].tolist() == [255, 255, 255]
    # perceptual maps grow in lightness
    for name in ("grey", "viridis", "magma", "inferno", "plasma", "cividis"):
        c = d.colormap(name)
        luma = c @ [0.2126, 0.7152, 0.0722]
        assert np.all(np.diff(luma) > -0.01), name


def test_histogram():
    counts, edges = d.histogram(np.r_[np.arange(10.0), np.nan], bins=5)
    assert counts.tolist() == [2, 2, 2, 2, 2] and edges[0] == 0 and edges[-1] == 9


@pytest.mark.parametrize("stretch", d.STRETCHES)
def test_fast_index_matches_the_exact_transfer(stretch):
    rng = np.random.default_rng(6)
    x = rng.normal(1000, 30, (256, 256)).astype(np.float32)
    x[::50, ::7] = np.nan
    x[100:110, 100:110] = 1e5  # a saturated star: far outside the body of the distribution
    x[0, :20] = -500.0
    fn = d.transfer(d.sorted_sample(x), d.DisplaySettings(stretch=stretch))
    exact = fn(x)
    want = np.where(np.isfinite(exact), 1.5 + 254 * np.nan_to_num(exact), 0).astype(np.uint8)
    got = fn.index(x)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (got[np.isnan(x)] == 0).all() and (got[100:110, 100:110] == 255).all()


def test_argb_lut_and_colourise():
    lut = d.argb_lut("viridis")
    assert lut.dtype == np.uint32 and lut.shape == (256,)
    assert lut[0] == 0  # no data: transparent
    r, g, b = d.index_lut("viridis")[1, :3]
    assert lut[1] == (0xFF << 24) | (int(r) << 16) | (int(g) << 8) | int(b)
    index = np.array([[0, 1], [128, 255]], dtype=np.uint8)
    out = d.colourise(index, lut)
    assert out.dtype == np.uint32 and out.tolist() == [[lut[0], lut[1]], [lut[128], lut[255]]]
    tile = np.random.default_rng(0).integers(0, 256, (300, 200)).astype(np.uint8)
    assert np.array_equal(d.colourise(tile, lut), np.take(lut, tile))  # what it was
    assert np.array_equal(d.colourise(tile[::3, 1::2], lut), np.take(lut, tile[::3, 1::2]))


@pytest.mark.parametrize("stretch", d.STRETCHES)
def test_tiles_of_many_amps_match_the_per_amp_transfers(stretch):
    rng = np.random.default_rng(7)
    n = 300
    samples = [d.sorted_sample(rng.normal(i % 7 * 10, 1 + i % 3, 800)) for i in range(n)]
    samples[5] = np.zeros(50, np.float32)  # a dead amp
    samples[9] = np.empty(0, np.float32)  # an amp without statistics: the global transfer
    t = d.build_transfers(1, d.DisplaySettings(stretch=stretch), samples, np.arange(n) // 16)
    data = rng.normal(30, 12, (160, 200)).astype(np.float32)
    data[:3] = np.nan
    rects = [(i, (i // 20) * 16, (i // 20) * 16 + 16, (i % 20) * 10, (i % 20) * 10 + 10)
             for i in range(n // 3)]  # fmt: skip
    assert len(rects) > d.MANY_AMPS
    got = d.apply_rects(data, rects, t)
    want = t.apply(data)  # outside every amp: the global transfer
    for amp, r0, r1, c0, c1 in rects:
        want[r0:r1, c0:c1] = t.apply(data[r0:r1, c0:c1], amp)
    assert np.abs(got.astype(int) - want).max() <= 1  # float rounding; table steps for histeq
    assert (got[:3] == 0).all()


def _numpy_apply_labels(t: d.Transfers, data, labels):
    """The numpy form of ``apply_labels`` for equalisation (what the kernel replaced)."""
    rows_of, lo, steps, tables = t.stacked
    rows = rows_of[labels.astype(np.int32) + 1]
    q = np.subtract(data, lo[rows], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        q *= steps[rows]
    q += np.float32(0.5)
    np.clip(q, 0.0, d.STACKED_SIZE - 1, out=q)
    np.nan_to_num(q, copy=False, nan=d.STACKED_SIZE)
    flat = rows * (d.STACKED_SIZE + 1)
    flat += q.astype(np.int32)
    return tables.ravel()[flat]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equalised_tiles_of_many_amps_equal_the_numpy_form(seed):
    """The overview's kernel (labels filled and tables looked up without the interpreter lock)
    gives the very indices of the numpy code it replaced: NaN, infinities, values beyond the
    limits, pixels of no amp, an amp without statistics, a dead amp, float64 data."""
    rng = np.random.default_rng(seed)
    n = 200
    samples = [d.sorted_sample(rng.normal(i % 7 * 10, 1 + i % 3, 800)) for i in range(n)]
    samples[5] = np.zeros(50, np.float32)
    samples[9] = np.empty(0, np.float32)
    t = d.build_transfers(1, d.DisplaySettings(), samples, np.arange(n) // 16)
    data = rng.normal(30, 25, (130, 170)).astype(np.float32)
    data[rng.random(data.shape) < 0.05] = np.nan
    data[rng.random(data.shape) < 0.01] = np.inf
    data[rng.random(data.shape) < 0.01] = -np.inf
    data[rng.random(data.shape) < 0.01] = 1e30
    rects = [(i, (i // 17) * 10, (i // 17) * 10 + 10, (i % 17) * 10, (i % 17) * 10 + 9)
             for i in range(n // 2)]  # fmt: skip
    rects.append((199, 125, 140, 160, 180))  # beyond the tile: clipped, as slicing does
    labels = np.full(data.shape, -1, dtype=np.int32)
    for amp, r0, r1, c0, c1 in rects:
        labels[r0:r1, c0:c1] = amp
    want = _numpy_apply_labels(t, data, labels)
    assert np.array_equal(t.apply_labels(data, labels), want)
    assert np.array_equal(d.apply_rects(data, rects, t), want)
    wide = data.astype(np.float64)
    assert np.array_equal(d.apply_rects(wide, rects, t), _numpy_apply_labels(t, wide, labels))
    assert np.array_equal(t.apply_labels(data[::2, 1::3], labels[::2, 1::3]), want[::2, 1::3])


# ---------------------------------------------------------------------------------------------
# The vectorised table builds against the per-amp loops they replace


def _amp_samples(seed: int, n: int = 120) -> list[np.ndarray]:
    """Per-amp samples as the viewer makes them (``sorted_sample`` of data with NaN), of many
    shapes: noise, steps (repeated values), a constant (dead) amp, all-NaN and tiny amps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.choice([3, 40, 900, 5000, 20000]))
        x = rng.normal(100 * (i % 5), 1 + i % 4, size)
        if i % 6 == 1:
            x = np.round(x)  # few distinct values: equal ranks share their mid-rank
        x[rng.random(size) < 0.05] = np.nan
        if i % 11 == 3:
            x[:] = 42.0  # a dead amp
        if i % 13 == 4:
            x[:] = np.nan  # no finite value: no statistics
        if i % 17 == 5:
            x[: size // 2] = 1e6  # saturated half
        out.append(d.sorted_sample(x))
    return out


def _loop_transfers(settings, samples, n=d.TRANSFER_POINTS):
    """The per-row loop ``build_transfers`` used to run (and still runs for a few rows)."""
    unused = d.Transfer(0.0, 1.0, "linear")
    rows = [d.transfer(s, settings, n) if s.size else unused for s in samples]
    if not samples[-1].size:
        rows[-1] = d.transfer(samples[-1], settings, n)
    return rows


def _same_transfer(a: d.Transfer, b: d.Transfer) -> bool:
    if (a.lo, a.hi, a.curve) != (b.lo, b.hi, b.curve):
        return False
    if a.curve != "interp":
        return True
    return np.array_equal(a.xs, b.xs) and np.array_equal(a.ys, b.ys)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "settings",
    [
        d.DisplaySettings(),
        d.DisplaySettings(stretch="histeq", limits="percentile", percentile=(0.5, 99.5)),
        d.DisplaySettings(stretch="histeq", limits="percentile", percentile=(10.0, 90.0)),
        d.DisplaySettings(stretch="histeq", limits="zscale"),
        d.DisplaySettings(stretch="histeq", limits="manual", manual=(90.0, 210.0)),
        d.DisplaySettings(stretch="asinh", limits="percentile"),
        d.DisplaySettings(stretch="linear", limits="minmax"),
    ],
)
def test_vectorised_transfers_equal_the_per_amp_loop(seed, settings):
    samples = _amp_samples(seed)
    samples.append(d.merge_samples(samples))  # the global row
    assert len(samples) > d.MANY_PARTS
    got = d._transfer_rows(samples, settings, d.TRANSFER_POINTS)
    want = _loop_transfers(settings, samples)
    bad = [r for r in range(len(want)) if not _same_transfer(got[r], want[r])]
    assert not bad, (bad[:5], got[bad[0]], want[bad[0]])
    # with no finite value anywhere, the fallback is still a real transfer
    empty = [np.empty(0, np.float32)] * (d.MANY_PARTS + 2)
    got = d._transfer_rows(empty, settings, d.TRANSFER_POINTS)
    want = _loop_transfers(settings, empty)
    assert all(_same_transfer(got[r], want[r]) for r in range(len(want)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_merge_equals_the_per_part_merge(seed):
    samples = _amp_samples(seed, 300)
    parts = [s for s in samples if s.size]
    total = sum(s.size for s in parts)
    size = d.SAMPLE_SIZE
    want = d.sorted_sample(
        np.concatenate([d._thin(s, max(1, round(2 * size * s.size / total))) for s in parts]),
        size,
    )
    assert total > 4 * size and len(parts) > d.MANY_PARTS
    assert np.array_equal(d.merge_samples(samples), want)


@pytest.mark.parametrize("stretch", ["histeq", "log"])
def test_stacked_tables_equal_the_per_row_interpolation(stretch):
    samples = _amp_samples(3)
    t = d.build_transfers(1, d.DisplaySettings(stretch=stretch), samples, np.arange(120) // 16)
    rows_of, lo, steps, tables = t.stacked
    grid = np.linspace(0.0, 1.0, d.STACKED_SIZE)
    for r, row in enumerate(t.rows if stretch == "histeq" else ()):
        if row.curve == "interp":
            y = np.interp(row.lo + grid * (row.hi - row.lo), row.xs, row.ys)
        else:
            y = d.stretch_curve(row.curve, grid)
        assert np.array_equal(tables[r, : d.STACKED_SIZE], d._to_index(y.astype(np.float32))), r
    assert lo.tolist() == np.float32([row.lo for row in t.rows]).tolist()
    assert rows_of[0] == t.fallback


def test_rows_from_the_same_samples_are_marked_unchanged():
    samples = _amp_samples(4)
    s = d.DisplaySettings()
    first = d.build_transfers(1, s, samples, np.arange(120) // 16)
    assert first.same_rows is None
    later = list(samples)
    later[7] = d.sorted_sample(np.arange(50.0))
    second = d.build_transfers(2, s, later, np.arange(120) // 16, previous=first)
    assert second.same_since == 1
    changed = np.flatnonzero(~second.same_rows).tolist()
    assert changed == [7, second.fallback]  # that amp and the global row
    rect = [(3, 0, 10, 0, 10)]
    assert second.unchanged_for(1, rect, covered_all=True)
    assert not second.unchanged_for(1, [(7, 0, 10, 0, 10)], covered_all=True)
    assert not second.unchanged_for(1, rect, covered_all=False)  # the global row changed
    assert not second.unchanged_for(0, rect, covered_all=True)  # not made with generation 1
    other = d.build_transfers(
        3, s.with_(stretch="log"), later, np.arange(120) // 16, previous=second
    )
    assert other.same_rows is None  # other settings: nothing carries over
