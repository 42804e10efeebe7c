"""Source detection: each kernel against a slow, obvious numpy version, then the whole chain on
simulated frames with known truth (positions, FWHM, completeness, false detections, flags)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from core import _detect_kernels as k
from core import detect
from core.detect import (
    BLENDED,
    EDGE,
    SATURATED,
    SOURCE_DTYPE,
    TRUNCATED,
    background,
    detect_sources,
    filtered_snr,
    gaussian_kernel,
    psf_summary,
)

# ---------------------------------------------------------------------------------------------
# Simulated frames (numpy only)


def _erf(a):
    return np.vectorize(math.erf)(a)


def add_gaussian_stars(image, xs, ys, fluxes, fwhm, radius=None):
    """Add Gaussian stars integrated over the pixels (exact, separable)."""
    sigma = fwhm / 2.3548200450309493
    radius = radius or int(math.ceil(5 * sigma)) + 1
    ny, nx = image.shape
    for x, y, f in zip(xs, ys, fluxes):
        cx, cy = round(x), round(y)
        e = np.arange(-radius, radius + 2) - 0.5
        gx = np.diff(_erf((cx + e - x) / (sigma * math.sqrt(2)))) / 2
        gy = np.diff(_erf((cy + e - y) / (sigma * math.sqrt(2)))) / 2
        stamp = f * np.outer(gy, gx)
        for j in range(2 * radius + 1):
            yy = cy - radius + j
            if 0 <= yy < ny:
                x0, x1 = cx - radius, cx + radius + 1
                lo, hi = max(x0, 0), min(x1, nx)
                image[yy, lo:hi] += stamp[j, lo - x0 : hi - x0]
    return image


def add_moffat_stars(image, xs, ys, fluxes, fwhm, beta=3.0, radius=25):
    """Add Moffat stars, each pixel the mean of 5 x 5 samples."""
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    for x, y, f in zip(xs, ys, fluxes):
        cx, cy = round(x), round(y)
        c = np.arange(-radius, radius + 1)
        px = (cx + c[:, None] + sub).ravel() - x
        py = (cy + c[:, None] + sub).ravel() - y
        r2 = py[:, None] ** 2 + px[None, :] ** 2
        prof = (beta - 1) / (math.pi * alpha**2) * (1 + r2 / alpha**2) ** -beta
        n = 2 * radius + 1
        image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] += f * prof.reshape(
            n, 5, n, 5
        ).mean(axis=(1, 3))
    return image


def sky(rng, shape, level=1000.0, noise=10.0):
    """A gentle gradient and Gaussian noise, float64."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    return level + 0.01 * xx - 0.02 * yy + rng.normal(0, noise, shape)


def flux_for_snr(snr, noise, fwhm):
    """The flux of a Gaussian star of this matched-filter S/N against background noise."""
    sigma = fwhm / 2.3548200450309493
    return snr * noise * math.sqrt(4 * math.pi) * sigma


def grid_positions(rng, shape, step, margin):
    """Jittered grid of sub-pixel positions, ``step`` apart, ``margin`` from the border."""
    ny, nx = shape
    ys, xs = np.mgrid[margin : ny - margin : step, margin : nx - margin : step].astype(float)
    xs = xs.ravel() + rng.uniform(-0.5, 0.5, xs.size) * step / 4
    ys = ys.ravel() + rng.uniform(-0.5, 0.5, ys.size) * step / 4
    return xs, ys


def nearest(src, x, y):
    d2 = (src["x"] - x) ** 2 + (src["y"] - y) ** 2
    i = int(np.argmin(d2))
    return i, math.sqrt(d2[i])


# ---------------------------------------------------------------------------------------------
# Slow numpy references


def ref_cell(cell):
    """3-sigma clipped (level, rms) of one cell, as documented in ``mesh_stats``: the first
    guess from the upper median and MAD of a regular subsample of about 256 pixels."""
    step = max(1, int(math.sqrt(cell.size / 256)))
    sub = cell[::step, ::step].ravel()
    sub = sub[np.isfinite(sub)][: 4 * 256]
    c = np.sort(sub)[sub.size // 2]
    s = 1.4826 * np.sort(np.abs(sub - c))[sub.size // 2]
    if s == 0:
        return c, 0.0
    v = cell[np.isfinite(cell)].astype(np.float64)
    med, mean = c, c
    for _ in range(30):
        kept = v[np.abs(v - c) <= 3 * s]
        med, mean = np.median(kept), kept.mean()
        s_new = kept.std() / 0.986577
        done = abs(med - c) < 1e-4 * s and abs(s_new - s) < 1e-4 * s
        c, s = med, s_new
        if done:
            break
    level = 2.5 * med - 1.5 * mean if mean - med < 0.3 * s else med
    return level, s


def ref_mesh(image, mesh, mask=None):
    ny, nx = image.shape
    ey, ex = detect.cell_edges(ny, mesh), detect.cell_edges(nx, mesh)
    min_valid = max(3, int(np.diff(ey).min() * np.diff(ex).min()) // 4)
    img = image.astype(np.float64)
    if mask is not None:
        img = np.where(mask, np.nan, img)
    level = np.full((ey.size - 1, ex.size - 1), np.nan)
    rms = np.full_like(level, np.nan)
    for j in range(ey.size - 1):
        for i in range(ex.size - 1):
            cell = img[ey[j] : ey[j + 1], ex[i] : ex[i + 1]]
            if np.isfinite(cell).sum() >= min_valid:
                level[j, i], rms[j, i] = ref_cell(cell)
    return level, rms


def ref_fill(mesh):
    m = mesh.copy()
    if np.isnan(m).all():
        return np.zeros_like(m)
    while np.isnan(m).any():
        new = m.copy()
        for j, i in zip(*np.nonzero(np.isnan(m))):
            win = m[max(j - 1, 0) : j + 2, max(i - 1, 0) : i + 2]
            if np.isfinite(win).any():
                new[j, i] = np.nanmean(win)
        m = new
    return m


def ref_median3x3(mesh):
    """3 x 3 median, the window kept symmetric at the border (shrunk to 1 x 3, or 1 x 1)."""
    ny, nx = mesh.shape
    out = np.empty_like(mesh)
    for j in range(ny):
        for i in range(nx):
            hj, hi = min(1, j, ny - 1 - j), min(1, i, nx - 1 - i)
            out[j, i] = np.median(mesh[j - hj : j + hj + 1, i - hi : i + hi + 1])
    return out


def ref_interp1(centres, values, pos):
    """Piecewise linear through (centres, values), extended linearly beyond the ends."""
    if centres.size == 1:
        return np.full(pos.shape, values[0])
    out = np.interp(pos, centres, values)
    lo, hi = pos < centres[0], pos > centres[-1]
    out[lo] = values[0] + (pos[lo] - centres[0]) * (values[1] - values[0]) / (
        centres[1] - centres[0]
    )
    out[hi] = values[-1] + (pos[hi] - centres[-1]) * (values[-1] - values[-2]) / (
        centres[-1] - centres[-2]
    )
    return out


def ref_full(mesh, ey, ex):
    cy = (ey[:-1] + ey[1:] - 1) / 2
    cx = (ex[:-1] + ex[1:] - 1) / 2
    ny, nx = int(ey[-1]), int(ex[-1])
    cols = np.stack([ref_interp1(cy, mesh[:, i], np.arange(ny)) for i in range(mesh.shape[1])], 1)
    return np.stack([ref_interp1(cx, cols[y], np.arange(nx)) for y in range(ny)])


def ref_filtered_snr(image, level, rms, g, mask=None):
    """Background-subtract, zero the bad pixels, np.convolve along rows then columns, divide by
    the filtered noise rms * sqrt(sum of the squared taps inside the image)."""
    bad = ~np.isfinite(image) if mask is None else (~np.isfinite(image) | mask)
    d = np.where(bad, 0.0, image.astype(np.float64) - level)
    d = np.apply_along_axis(lambda r: np.convolve(r, g, mode="same"), 1, d)
    d = np.apply_along_axis(lambda c: np.convolve(c, g, mode="same"), 0, d)
    ny, nx = image.shape
    gx = np.convolve(np.ones(nx), g**2, mode="same")
    gy = np.convolve(np.ones(ny), g**2, mode="same")
    sig = rms * np.sqrt(gy[:, None] * gx[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(sig > 0, d / sig, np.where(d > 0, np.inf, 0.0))
    return np.where(bad, np.nan, snr)


def ref_label(above, minarea):
    """8-connected components of ``above`` by breadth-first flood fill: a set of pixel sets."""
    ny, nx = above.shape
    seen = np.zeros_like(above)
    comps = set()
    for y0, x0 in zip(*np.nonzero(above)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        todo, comp = deque([(y0, x0)]), []
        while todo:
            y, x = todo.popleft()
            comp.append((int(y), int(x)))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < ny and 0 <= xx < nx and above[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        todo.append((yy, xx))
        if len(comp) >= minarea:
            comps.add(frozenset(comp))
    return comps


def our_components(image, thresh, minarea, fwhm, mesh):
    """The objects of the labelling step (before deblending) as a set of pixel sets."""
    image = detect._as_image(image)
    m, use = detect._as_mask(None, image.shape)
    bkg = detect._background(image, m, use, mesh)
    (ry, rx0, rx1, parent, _), _ = detect._detect(image, m, use, bkg, thresh, fwhm, False)
    order, offsets = k.components(rx0, rx1, parent, minarea)
    comps = set()
    for o in range(offsets.size - 1):
        pix = []
        for r in order[offsets[o] : offsets[o + 1]]:
            pix += [(int(ry[r]), x) for x in range(rx0[r], rx1[r])]
        assert len(pix) == len(set(pix))
        comps.add(frozenset(pix))
    return comps


# ---------------------------------------------------------------------------------------------
# Kernels against the references


def _frame(kind, rng):
    shape = (150, 170)
    if kind == "noise":
        return sky(rng, shape).astype(np.float32)
    if kind == "stars":
        img = sky(rng, shape)
        add_gaussian_stars(img, rng.uniform(5, 165, 25), rng.uniform(5, 145, 25),
                           rng.uniform(500, 50000, 25), 3.0)  # fmt: skip
        return img.astype(np.float32)
    if kind == "nan":
        img = sky(rng, shape).astype(np.float32)
        img[10:60, 20:55] = np.nan  # one cell entirely, others partly
        img[100:103, :] = np.nan
        return img
    if kind == "constant":
        return np.full(shape, 1234.0, dtype=np.float32)
    if kind == "saturated":
        img = sky(rng, shape)
        img[40:120, 60:150] = 65535.0  # flat saturated blob over whole cells
        return img.astype(np.float32)
    if kind == "int32":
        return np.rint(sky(rng, shape, noise=20.0)).astype(np.int32)
    raise ValueError(kind)


KINDS = ["noise", "stars", "nan", "constant", "saturated", "int32"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mesh", [32, 50])
def test_mesh_statistics_match_sigma_clipped_reference(kind, mesh):
    img = _frame(kind, np.random.default_rng(1))
    bkg = background(img, mesh=mesh)
    level, rms = ref_mesh(img, mesh)
    np.testing.assert_array_equal(np.isnan(bkg.raw_level), np.isnan(level))
    ok = np.isfinite(level)
    ngood = np.array(
        [[np.isfinite(img[a:b, c:d].astype(float)).sum() for c, d in zip(bkg.x_edges, bkg.x_edges[1:])]
         for a, b in zip(bkg.y_edges, bkg.y_edges[1:])]
    )[ok]  # fmt: skip
    sigma = rms[ok]
    # The kernel iterates on a histogram of sigma / 100 bins (one value a bin for integers):
    # its level is within half the statistical error of the level itself (2.1 sigma / sqrt(n)
    # for the mode; plus the half count by which integer medians are quantised), and its clip
    # boundary may put up to three pixels on the other side (4 sigma / n each on the rms).
    tol_level = 0.5 * 2.1 * sigma / np.sqrt(ngood) + (1.5 if kind == "int32" else 1e-3)
    assert np.all(np.abs(bkg.raw_level[ok] - level[ok]) <= tol_level)
    assert np.all(np.abs(bkg.raw_rms[ok] - sigma) <= 12 * sigma / ngood + 1e-3)


def test_mesh_statistics_see_through_the_mask():
    rng = np.random.default_rng(2)
    img = _frame("stars", rng)
    mask = np.zeros(img.shape, dtype=bool)
    mask[30:90, 40:120] = True
    img[mask] = 1e6  # garbage under the mask must not matter
    bkg = background(img, mesh=32, mask=mask)
    level, _ = ref_mesh(img, 32, mask)
    ok = np.isfinite(level)
    np.testing.assert_array_equal(np.isnan(bkg.raw_level), ~ok)
    assert np.all(np.abs(bkg.raw_level[ok] - level[ok]) < 0.3)


@pytest.mark.parametrize("seed", range(4))
def test_fill_and_median_filter_match_reference(seed):
    rng = np.random.default_rng(seed)
    mesh = rng.normal(100, 5, (rng.integers(1, 7), rng.integers(1, 8)))
    mesh[rng.random(mesh.shape) < 0.4] = np.nan
    want = ref_fill(mesh)
    got = mesh.copy()
    k.fill_bad_cells(got)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    out = np.empty_like(got)
    k.median3x3(got, out)
    np.testing.assert_allclose(out, ref_median3x3(want), rtol=1e-12)


@pytest.mark.parametrize("shape", [(150, 170), (40, 33), (300, 90)])
def test_background_interpolation_matches_reference(shape):
    rng = np.random.default_rng(3)
    img = sky(rng, shape).astype(np.float32)
    bkg = background(img, mesh=32)
    level, rms = bkg.full()
    np.testing.assert_allclose(level, ref_full(bkg.level, bkg.y_edges, bkg.x_edges), rtol=1e-6)
    np.testing.assert_allclose(rms, ref_full(bkg.rms, bkg.y_edges, bkg.x_edges), rtol=1e-5)


def test_background_follows_a_gradient_under_stars():
    rng = np.random.default_rng(4)
    shape = (512, 512)
    img = sky(rng, shape, noise=10.0)
    add_gaussian_stars(img, rng.uniform(0, 512, 150), rng.uniform(0, 512, 150),
                       rng.uniform(1e3, 1e5, 150), 4.0)  # fmt: skip
    level, rms = background(img.astype(np.float32), mesh=64).full()
    yy, xx = np.mgrid[0:512, 0:512]
    truth = 1000.0 + 0.01 * xx - 0.02 * yy
    assert np.abs(level - truth).max() < 1.5  # 0.15 sigma, edges included
    assert np.abs(np.median(rms) - 10.0) < 0.3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fwhm", [2.0, 4.0])
def test_filtered_snr_matches_numpy_convolution(kind, fwhm):
    img = _frame(kind, np.random.default_rng(5))
    got = filtered_snr(img, mesh=50, fwhm_guess=fwhm)
    bkg = background(img, mesh=50)
    level, rms = bkg.full()
    want = ref_filtered_snr(img, level, rms, gaussian_kernel(fwhm))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-3)


def test_filtered_snr_is_unit_normal_on_noise():
    img = sky(np.random.default_rng(6), (400, 400)).astype(np.float32)
    snr = filtered_snr(img, mesh=64)
    assert abs(float(np.mean(snr))) < 0.05
    assert abs(float(np.std(snr)) - 1.0) < 0.05  # the filtered-noise sigma is right
    edge = np.concatenate([snr[0], snr[-1], snr[:, 0], snr[:, -1]])
    assert abs(float(np.std(edge)) - 1.0) < 0.1  # and stays right at the border


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("density", [0.05, 0.3])
def test_labelling_matches_flood_fill(seed, density):
    rng = np.random.default_rng(seed)
    shape = (120, 140)
    img = sky(rng, shape, noise=10.0)
    img += 200.0 * (rng.random(shape) < density)  # blobs of every shape: diagonals, U-turns
    img[60:64, 30:90] = np.nan
    img = img.astype(np.float32)
    snr = filtered_snr(img, mesh=64, fwhm_guess=1.0)
    above = np.nan_to_num(snr, nan=-np.inf) > 5.0
    assert our_components(img, 5.0, 3, 1.0, 64) == ref_label(above, 3)


def test_labelling_joins_a_u_and_splits_diagonal_gaps():
    img = np.random.default_rng(7).normal(0, 1, (40, 40)).astype(np.float32)
    u = np.zeros((40, 40), dtype=bool)
    u[5:30, 5] = u[5:30, 15] = u[5, 5:16] = True  # a U opening upwards: joined at its bottom
    u[10, 25] = u[11, 26] = u[12, 27] = u[13, 28] = True  # a diagonal line
    u[20, 25] = u[22, 27] = True  # two pixels one apart diagonally: not touching
    img[u] += 1000.0
    comps = our_components(img, 5.0, 1, 0.5, 64)
    sizes = sorted(len(c) for c in comps)
    assert sizes == [1, 1, 4, 25 + 25 + 9]


def test_empty_constant_and_nan_images_give_no_sources():
    assert detect_sources(np.zeros((0, 10), np.float32)).dtype == SOURCE_DTYPE
    assert len(detect_sources(np.zeros((0, 10), np.float32))) == 0
    assert len(detect_sources(np.full((64, 80), 7.0, np.float32))) == 0
    assert len(detect_sources(np.full((64, 80), np.nan, np.float32))) == 0
    assert len(detect_sources(np.full((3, 3), 1.0, np.float32), minarea=1)) == 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2-d"):
        detect_sources(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="mask"):
        detect_sources(np.zeros((10, 10), np.float32), mask=np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="thresh"):
        detect_sources(np.zeros((10, 10), np.float32), thresh=0)
    with pytest.raises(ValueError, match="minarea"):
        detect_sources(np.zeros((10, 10), np.float32), minarea=0)


# ---------------------------------------------------------------------------------------------
# The chain on simulated stars


def _star_field(psf, fwhm, seed, snr=(300, 1000), shape=(512, 512), step=32):
    rng = np.random.default_rng(seed)
    xs, ys = grid_positions(rng, shape, step, 20)
    snrs = rng.uniform(*snr, xs.size)
    img = sky(rng, shape)
    flux = np.array([flux_for_snr(s, 10.0, fwhm) for s in snrs])
    if psf == "gaussian":
        add_gaussian_stars(img, xs, ys, flux, fwhm)
    else:
        add_moffat_stars(img, xs, ys, flux, fwhm, radius=15)
    return img.astype(np.float32), xs, ys, snrs


@pytest.mark.parametrize("psf", ["gaussian", "moffat"])
@pytest.mark.parametrize("fwhm", [3.5, 5.0])
def test_positions_within_a_tenth_of_a_pixel_at_high_snr(psf, fwhm):
    img, xs, ys, _ = _star_field(psf, fwhm, seed=10)
    src = detect_sources(img)
    err = []
    for x, y in zip(xs, ys):
        i, d = nearest(src, x, y)
        assert d < 1.0
        assert src["flags"][i] == 0
        err.append((src["x"][i] - x, src["y"][i] - y))
    err = np.array(err)
    assert np.sqrt(np.mean(err**2)) < 0.1
    assert np.abs(err.mean(axis=0)).max() < 0.02  # no bias, e.g. from the pixel-centre convention


@pytest.mark.parametrize("fwhm", [3.5, 5.0])
def test_fwhm_within_five_percent_for_bright_gaussian_stars(fwhm):
    img, xs, ys, _ = _star_field("gaussian", fwhm, seed=11)
    src = detect_sources(img, fwhm_guess=4.0)  # the guess need not be right
    for x, y in zip(xs, ys):
        i, _ = nearest(src, x, y)
        assert abs(src["fwhm"][i] / fwhm - 1) < 0.05
        assert src["ellipticity"][i] < 0.05
    summary = psf_summary(src)
    assert summary["n"] == xs.size
    assert abs(summary["fwhm"] / fwhm - 1) < 0.05
    assert summary["ellipticity"] < 0.02


def test_elongated_stars_give_axes_and_angle():
    shape = (96, 96)
    img = sky(np.random.default_rng(12), shape)
    yy, xx = np.mgrid[0:96, 0:96] - 48.0
    th = np.deg2rad(30.0)
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    img += 2e5 / (2 * np.pi * 3.0 * 1.5) * np.exp(-0.5 * (u**2 / 9.0 + v**2 / 2.25))
    src = detect_sources(img.astype(np.float32))
    i, _ = nearest(src, 48, 48)
    assert src["a"][i] == pytest.approx(3.0, rel=0.03)
    assert src["b"][i] == pytest.approx(1.5, rel=0.05)
    assert np.rad2deg(src["theta"][i]) == pytest.approx(30.0, abs=1.0)
    assert src["ellipticity"][i] == pytest.approx(0.5, abs=0.03)


def test_completeness_above_snr_10_and_few_false_detections():
    rng = np.random.default_rng(13)
    shape = (1024, 1024)
    xs, ys = grid_positions(rng, shape, 24, 12)
    snr = np.exp(rng.uniform(np.log(10), np.log(100), xs.size))
    img = sky(rng, shape)
    add_gaussian_stars(img, xs, ys, [flux_for_snr(s, 10.0, 4.0) for s in snr], 4.0)
    src = detect_sources(img.astype(np.float32), thresh=5.0)
    found = [nearest(src, x, y)[1] < 1.5 for x, y in zip(xs, ys)]
    assert np.mean(found) > 0.95
    false = sum(
        np.min((xs - sx) ** 2 + (ys - sy) ** 2) > 1.5**2 for sx, sy in zip(src["x"], src["y"])
    )
    assert false < 1.0 * img.size / 1e6


def test_pure_noise_gives_fewer_than_one_detection_per_mpix():
    img = sky(np.random.default_rng(14), (1536, 1536)).astype(np.float32)
    src = detect_sources(img, thresh=5.0)
    assert len(src) < img.size / 1e6


def test_saturated_stars_are_flagged_with_a_scalar_or_per_amp_level():
    rng = np.random.default_rng(15)
    shape = (256, 512)
    img = sky(rng, shape)
    xs = np.array([60.3, 180.7, 300.2, 420.6])
    ys = np.array([128.4, 128.1, 127.6, 128.9])
    add_gaussian_stars(img, xs, ys, [5e4, 5e6, 5e4, 5e6], 4.0)
    img = np.minimum(img, 60000.0).astype(np.float32)
    src = detect_sources(img, saturation=60000.0)
    got = [bool(src["flags"][nearest(src, x, y)[0]] & SATURATED) for x, y in zip(xs, ys)]
    assert got == [False, True, False, True]
    per_amp = np.where(np.arange(512) < 256, 60000.0, 1e9)[None, :]  # two "amps", one never
    src = detect_sources(img, saturation=per_amp)
    got = [bool(src["flags"][nearest(src, x, y)[0]] & SATURATED) for x, y in zip(xs, ys)]
    assert got == [False, True, False, False]
    assert psf_summary(src)["n"] <= 3


def test_edge_flags_at_the_border_and_next_to_nan():
    rng = np.random.default_rng(16)
    shape = (200, 200)
    img = sky(rng, shape)
    xs = np.array([1.2, 100.0, 100.0, 150.3, 60.0])
    ys = np.array([100.0, 198.5, 100.2, 40.0, 150.0])
    add_gaussian_stars(img, xs, ys, [2e4] * 5, 4.0)
    img = img.astype(np.float32)
    img[30:50, 154:170] = np.nan  # touches the star at (150.3, 40)
    mask = np.zeros(shape, dtype=bool)
    mask[140:160, 64:80] = True  # the star at (60, 150) runs into masked pixels
    src = detect_sources(img, mask=mask)
    flags = [int(src["flags"][nearest(src, x, y)[0]]) for x, y in zip(xs, ys)]
    assert [bool(f & EDGE) for f in flags] == [True, True, False, True, True]
    assert flags[0] & TRUNCATED  # its measurement window runs off the image too
    assert flags[2] == 0


def test_a_close_pair_is_deblended_and_flagged():
    rng = np.random.default_rng(17)
    img = sky(rng, (128, 128))
    xs, ys = np.array([58.3, 66.9]), np.array([64.2, 66.1])  # 8.8 px apart, FWHM 4
    add_gaussian_stars(img, xs, ys, [3e4, 1.5e4], 4.0)
    src = detect_sources(img.astype(np.float32))
    assert len(src) == 2
    for x, y in zip(xs, ys):
        i, d = nearest(src, x, y)
        assert d < 0.3
        assert src["flags"][i] & BLENDED
    assert psf_summary(src)["n"] == 0


def test_int32_and_float32_images_agree():
    img, _, _, _ = _star_field("gaussian", 4.0, seed=18, shape=(256, 256))
    a = detect_sources(np.rint(img).astype(np.int32))
    b = detect_sources(np.rint(img).astype(np.float32))
    assert len(a) == len(b) > 0
    a, b = np.sort(a, order="x"), np.sort(b, order="x")
    # integers are binned one value a bin in the background histogram: a slightly different
    # (better) median, hence a flux a little different; shapes and positions hardly move
    np.testing.assert_allclose(a["x"], b["x"], atol=2e-3)
    np.testing.assert_allclose(a["y"], b["y"], atol=2e-3)
    np.testing.assert_allclose(a["fwhm"], b["fwhm"], rtol=0.01)
    np.testing.assert_allclose(a["flux"], b["flux"], rtol=0.01)
    np.testing.assert_array_equal(a["flags"], b["flags"])


def test_psf_summary_ignores_galaxies_cosmic_rays_and_faint_stars():
    rng = np.random.default_rng(19)
    shape = (512, 512)
    img = sky(rng, shape)
    xs, ys = grid_positions(rng, shape, 40, 20)
    kind = rng.integers(0, 4, xs.size)  # 0, 1: bright star; 2: galaxy; 3: faint star
    for x, y, kd in zip(xs, ys, kind):
        fwhm = 9.0 if kd == 2 else 4.0
        snr = 15.0 if kd == 3 else 500.0
        add_gaussian_stars(img, [x], [y], [flux_for_snr(snr, 10.0, fwhm)], fwhm)
    cr = rng.integers(10, 500, (30, 2))
    img[cr[:, 0], cr[:, 1]] += 3000.0  # single-pixel cosmic rays
    src = detect_sources(img.astype(np.float32))
    summary = psf_summary(src)
    assert abs(summary["fwhm"] / 4.0 - 1) < 0.03
    assert summary["n"] >= 0.8 * np.sum(kind <= 1)
    assert psf_summary(np.zeros(0, SOURCE_DTYPE)) == {"fwhm": pytest.approx(np.nan, nan_ok=True),
                                                      "ellipticity": pytest.approx(np.nan, nan_ok=True),
                                                      "n": 0}  # fmt: skip


def test_sep_cross_check():
    sep = pytest.importorskip("sep")
    img, xs, ys, _ = _star_field("gaussian", 4.0, seed=20, shape=(256, 256))
    ours = detect_sources(img)
    bkg = sep.Background(img, bw=128, bh=128)
    theirs = sep.extract(img - bkg, 10.0, err=bkg.globalrms)
    assert abs(background(img).global_rms / bkg.globalrms - 1) < 0.03
    for x, y in zip(xs, ys):
        assert nearest(ours, x, y)[1] < 0.2
        assert np.min(np.hypot(theirs["x"] - x, theirs["y"] - y)) < 0.5


def test_a_dead_amp_neither_crashes_nor_detects(tmp_path):
    """A disconnected amp reads a constant, 0 once overscan-corrected: zero noise there must mean
    no detections, not a division by zero (every such CCD of a simulated full camera crashed)."""
    from core.camera import load_camera
    from core.ingest import process_ccd
    from core.rawfile import read_raw
    from core.simulate import Fault, simulate_ccd

    sim = simulate_ccd("R22_S11", seed=1, faults=[Fault("R22_S11", "C05", "dead_amp")])
    product = process_ccd(read_raw(sim.write(tmp_path / "dead.fits")), load_camera("LSSTCam"))
    found = detect_sources(product.levels[0], saturation=1.3e5)
    assert len(found) > 100  # the rest of the CCD still has its stars
    c05 = (found["x"] >= 2560) & (found["x"] < 3072) & (found["y"] < 2002)  # E2V C05, unflipped
    assert not c05.any()


@pytest.mark.parametrize("fwhm", [3.5, 5.0])
def test_detection_on_level_1_comes_back_in_full_resolution_units(fwhm):
    """What the ingest does: detect on the 2 x 2 mean level, report in level-0 pixels."""
    from core.detect import detect_binned
    from core.isr import downsample

    img, xs, ys, _ = _star_field("gaussian", fwhm, seed=13)
    full = detect_sources(img)
    binned = detect_binned(downsample(img))
    err = []
    for x, y in zip(xs, ys):
        i, d = nearest(binned, x, y)
        assert d < 1.0
        j, _ = nearest(full, x, y)
        err.append((binned["x"][i] - x, binned["y"][i] - y))
        assert binned["flux"][i] == pytest.approx(full["flux"][j], rel=0.05)
        assert abs(binned["fwhm"][i] / fwhm - 1) < 0.1  # 3.5 px is under 2 binned pixels
    err = np.array(err)
    assert np.sqrt(np.mean(err**2)) < 0.1
    assert np.abs(err.mean(axis=0)).max() < 0.03
    assert abs(psf_summary(binned)["fwhm"] / fwhm - 1) < 0.05


def test_benchmark_scoring_without_sep(monkeypatch):
    """The benchmark's own pieces (simulation with truth, matching, table) need no SEP, and a
    missing SEP is a clear message, not an ImportError."""
    import sys

    from core.bench import detect as bench

    frame = bench.simulate_frame(np.random.default_rng(21), (300, 320), n_stars=40)
    assert frame.image.dtype == np.float32 and np.isnan(frame.image).any()
    x, y, seconds, _ = bench.run_ours(frame.image, thresh=5.0, fwhm=4.0, mesh=128, saturation=None)
    score = bench.MethodScore("ours")
    score.add(x, y, frame.truth, seconds, frame.image.size)
    bright = frame.truth["usable"] & (frame.truth["snr"] > 20)
    _, found = bench.match(x, y, frame.truth["x"], frame.truth["y"])
    assert found[bright].mean() > 0.9
    assert "ours" in bench.format_table(score)
    monkeypatch.setitem(sys.modules, "sep", None)
    with pytest.raises(bench.MissingDependency, match="pip install sep"):
        bench.import_sep()
