"""Per-amp metrics: every kernel against a slow, obvious numpy version; accuracy on simulated
amps with known truth; the real ts8 amp."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from core import _metrics_kernels as k
from core import isr
from core.camera import load_camera
from core.layout import amp_placements
from core.metrics import (
    AMP_COLUMNS,
    MetricsConfig,
    amp_constants,
    amp_metrics,
    image_category,
    level0_to_ccd,
)

# ---------------------------------------------------------------------------------------------
# Small synthetic segments (the kernels take any layout)

NY, NX = 400, 110
DATASEC = (4, 64, 0, 360)  # x0, x1, y0, y1: prescan 4, serial overscan 46, parallel 40
OX0, OX1 = isr.IsrConfig().serial_columns(DATASEC, NX)


def make_segments(n_amp=4, seed=0, signal=0.0, noise=5.0, bias=25000.0):
    rng = np.random.default_rng(seed)
    seg = bias + rng.normal(0.0, noise, size=(n_amp, NY, NX))
    x0, x1, y0, y1 = DATASEC
    seg[:, y0:y1, x0:x1] += signal + rng.normal(0.0, np.sqrt(max(signal, 0.0)), (n_amp, 360, 60))
    return np.rint(seg).astype(np.int32)


def row_bias_of(seg):
    rb, _ = isr.overscan_bias(seg, DATASEC)
    return rb


def data_of(seg, rb, a):
    x0, x1, y0, y1 = DATASEC
    return seg[a, y0:y1, x0:x1].astype(np.int64) - np.rint(rb[a, y0:y1]).astype(np.int64)[:, None]


# ---------------------------------------------------------------------------------------------
# Slow references, written from the definitions in core.metrics


def grouped_quantile(values, q):
    values = np.sort(np.asarray(values, dtype=np.int64).ravel())
    target = q * values.size
    uniq, counts = np.unique(values, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    i = np.flatnonzero(below + counts >= target)[0]
    return uniq[i] - 0.5 + (target - below[i]) / counts[i]


def ref_bias_level(seg):
    return np.array([grouped_quantile(seg[a, :, OX0:OX1], 0.5) for a in range(len(seg))])


def ref_read_noise(seg, rb, box=(20, 20)):
    out = []
    m = OX1 - OX0
    nbx, nby = m // box[1], NY // box[0]
    first = OX1 - nbx * box[1]
    n = box[0] * box[1]
    corr = 1 / np.sqrt(1 - (n - box[1]) / ((n - 1) * m))
    for a in range(len(seg)):
        resid = seg[a].astype(np.float64) - rb[a][:, None].astype(np.float64)
        stds = [
            resid[j * box[0] : (j + 1) * box[0], first + i * box[1] : first + (i + 1) * box[1]].std(
                ddof=1
            )
            for j in range(nby)
            for i in range(nbx)
        ]
        out.append(np.median(stds) * corr)
    return np.array(out)


def ref_shifts(profile, window=30, half=15, threshold=3.0, skip=30):
    """eo_pipe's scan_for_shifts with a robust running-mean high-pass for the noise."""
    p = profile.astype(np.float64)
    ny = p.size
    run = np.array([p[max(0, i - half) : i + half + 1].mean() for i in range(ny)])
    hp = p - run
    noise = 1.4826 * np.median(np.abs(hp - np.median(hp)))
    kernel = np.concatenate([np.arange(window), np.arange(-window + 1, 0)])
    kernel = kernel / kernel[:window].sum()
    conv = np.convolve(p, kernel, mode="valid")
    conv = np.concatenate([np.zeros(window - 1), conv, np.zeros(window)])
    like = np.abs(conv) / max(noise, 1e-6)
    mask = like > threshold
    mask[:skip] = False
    runs = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0])).reshape(-1, 2)
    shifts = []
    for start, stop in runs:
        peak = start + int(np.argmax(like[start:stop]))
        mag = conv[peak]
        if peak - window < 0 or peak + window > ny:
            continue
        pre = np.polyfit(np.arange(peak - window, peak), p[peak - window : peak], 1)[0]
        post = np.polyfit(np.arange(peak, peak + window), p[peak : peak + window], 1)[0]
        pre, post = pre * 2 * window, post * 2 * window
        ok = (pre < mag and post < mag) if mag > 0 else (pre > mag and post > mag)
        if ok:
            shifts.append(mag)
    return len(shifts), max((abs(s) for s in shifts), default=0.0), noise


def ref_eper(seg, rb, noise, n_over=3, min_signal=20.0):
    x0, x1, y0, y1 = DATASEC
    out = []
    for a in range(len(seg)):
        r = seg[a].astype(np.float64) - rb[a][:, None]
        s_last = r[y0:y1, x1 - 1].mean()
        s_def = r[y0:y1, x1 : x1 + n_over].sum(axis=1).mean()
        p_last = r[y1 - 1, x0:x1].mean()
        p_def = r[y1 : y1 + n_over, x0:x1].sum(axis=0).mean()
        s = s_def / (s_last * (x1 + 1)) if s_last >= min_signal else np.nan
        p = p_def / (p_last * (y1 + 1)) if p_last >= min_signal else np.nan
        s_err = noise[a] * np.sqrt(n_over / (y1 - y0)) / (s_last * (x1 + 1)) if s == s else np.nan
        p_err = noise[a] * np.sqrt(n_over / (x1 - x0)) / (p_last * (y1 + 1)) if p == p else np.nan
        out.append((s, s_err, p, p_err))
    return np.array(out)


def ref_sample(seg, rb, step=4):
    out = []
    for a in range(len(seg)):
        d = data_of(seg, rb, a)[::step]
        out.append(
            (np.median(d), grouped_quantile(d, 0.25), grouped_quantile(d, 0.75), d.min(), d.max())
        )
    return np.array(out, dtype=np.float64)


def ref_track_like(cv, cu, shape, max_rows=100):
    """Pixels in 8-connected groups of >= 4 that are thin (< 0.9 px rms across), at least 2.5
    times longer than thick and span fewer than ``max_rows`` rows."""
    mask = np.zeros(shape, dtype=bool)
    mask[cv, cu] = True
    lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    out = np.zeros(len(cv), dtype=bool)
    for i, (v, u) in enumerate(zip(cv, cu)):
        vv, uu = np.nonzero(lab == lab[v, u])
        if vv.size < 4:
            continue
        cov = np.cov(np.vstack([uu, vv]).astype(float), bias=True)
        minor, major = np.sqrt(np.maximum(np.linalg.eigvalsh(cov), 0))
        out[i] = minor < 0.9 and major >= 2.5 * minor and vv.max() - vv.min() + 1 < max_rows
    return out


def ref_defects(seg, rb, sat, med, tb, td, winsor, sharp, use_runs, border, c=MetricsConfig()):
    x0, x1, y0, y1 = DATASEC
    h, w = y1 - y0, x1 - x0
    out = []
    for a in range(len(seg)):
        d = data_of(seg, rb, a)
        raw = seg[a, y0:y1, x0:x1]
        ex = d - med[a]
        hb = np.floor(med[a] + tb[a])
        search = np.zeros((h, w), dtype=bool)
        search[border[a, 0] : h - border[a, 2], border[a, 1] : w - border[a, 3]] = True
        bright = (d > hb) & search
        saturated = raw >= np.ceil(sat[a])
        if sharp:
            pad = np.pad(ex.astype(float), 1, constant_values=np.nan)
            around = np.stack(
                [
                    pad[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                    if (dy, dx) != (0, 0)
                ]
            )
            m8 = np.nanmedian(around, axis=0)
            hot = (ex > c.hot_contrast * m8) & (ex - m8 > tb[a])
        else:
            hot = np.ones_like(bright)
        cv, cu = np.nonzero(bright)
        track = ref_track_like(cv, cu, (h, w), c.cosmic_ray_rows)
        not_cr = np.zeros((h, w), dtype=bool)
        not_cr[cv[~track], cu[~track]] = True

        def longest_run(col):
            best = run = 0
            for v in col:
                run = run + 1 if v else 0
                best = max(best, run)
            return best

        wl, wh = np.floor(med[a] - winsor[a]), np.ceil(med[a] + winsor[a])
        mean = np.clip(d, wl, wh).mean(axis=0)
        local = np.array(
            [np.median(mean[max(0, u - 7) : u + 8]) for u in range(w)], dtype=np.float64
        )
        excess = mean - local
        mid = np.median(excess)
        sig_c = max(1.4826 * np.median(np.abs(excess - mid)), winsor[a] / 3 / np.sqrt(h))
        has_sat = saturated.any(axis=0)
        u_in = np.zeros(w, dtype=bool)
        u_in[border[a, 1] : w - border[a, 3]] = True
        bcol = u_in & (
            (use_runs & np.array([longest_run(not_cr[:, u]) >= 20 for u in range(w)]))
            | (~has_sat & (excess - mid > c.column_sigma * sig_c))
        )
        counted = not_cr & ~bcol[None, :]
        if sharp:  # hot, not in a group with saturated pixels, tracks among the hot pixels
            lab, n = ndimage.label(bright, structure=np.ones((3, 3)))
            star = ndimage.maximum(saturated & bright, lab, np.arange(n + 1)).astype(bool)
            hv, hu = np.nonzero(bright & hot & ~star[lab])
            track = ref_track_like(hv, hu, (h, w), c.cosmic_ray_rows)
            counted = np.zeros((h, w), dtype=bool)
            counted[hv[~track], hu[~track]] = True
            counted &= ~bcol[None, :]
        n_bpix = int(counted.sum())
        if td[a] == td[a]:
            dark = (d < np.ceil(td[a])) & search
            dcol = np.array([longest_run(dark[:, u]) >= 20 for u in range(w)])
            n_dpix, n_dcol = int(dark[:, ~dcol].sum()), int(dcol.sum())
        else:
            n_dpix = n_dcol = np.nan
        out.append((int(saturated.sum()), n_bpix, int(bcol.sum()), n_dpix, n_dcol))
    return np.array(out, dtype=np.float64)


def ref_divisadero(seg, rb, med, clip, edges, rows=(10, 210), nedge=25):
    x0, x1, y0, y1 = DATASEC
    out = []
    for a in range(len(seg)):
        d = data_of(seg, rb, a)[rows[0] : rows[1]].astype(float)
        keep = np.abs(d - med[a]) <= clip[a]
        col = np.array(
            [d[keep[:, u], u].mean() if keep[:, u].any() else np.nan for u in range(d.shape[1])]
        )
        norm = col / np.nanmedian(col)
        u = np.arange(norm.size)
        good = np.isfinite(norm) & (u >= nedge) & (u < norm.size - nedge)
        fit = np.polyval(np.polyfit(u[good], norm[good], 1), u)
        resp = norm / fit
        vals = ([resp[0], resp[1]] if edges[a, 0] else []) + (
            [resp[-1], resp[-2]] if edges[a, 1] else []
        )
        vals = [v for v in vals if np.isfinite(v)]
        out.append(max(abs(v - 1) for v in vals) if vals else np.nan)
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# Kernels against the references


def faulty_segments(seed):
    """Amps with what the metrics look for: a flat-like signal, hot pixels, a hot and a dead
    column, a cosmic ray, saturation, a bias jump, deferred charge; amp 3 is dead (constant)."""
    seg = make_segments(4, seed, signal=2000.0, noise=5.0).astype(np.int64)
    x0, x1, y0, y1 = DATASEC
    rng = np.random.default_rng(seed + 100)
    seg[0, y0 + 50 : y1, x0 + 20] += 500  # hot column (partial, long)
    seg[0, y0:y1, x0 + 30] = 25000 + 10  # dead column
    for v, u in zip(rng.integers(10, 350, 12), rng.integers(8, 55, 12)):
        seg[1, v, x0 + u] += 3000  # hot pixels
    for t in range(12):
        seg[1, 100 + t, x0 + 40 + t // 3] += 4000  # a cosmic ray
    seg[1, 200:203, x0 + 10] = 120000  # saturated
    seg[2, 180:, :] += 30  # bias jump in every column, overscan included
    seg[2, y0:y1, x1 : x1 + 3] += np.array([40, 12, 4])  # deferred charge
    seg[3] = 25000
    return seg.astype(np.int32)


@pytest.fixture(scope="module", params=[0, 1, 2])
def case(request):
    seg = faulty_segments(request.param)
    rb = row_bias_of(seg)
    return seg, rb


def test_bias_level(case):
    seg, rb = case
    out = np.empty(len(seg))
    k.bias_level(seg, OX0, OX1, out)
    np.testing.assert_allclose(out, ref_bias_level(seg), atol=1e-9)


def test_read_noise(case):
    seg, rb = case
    out = np.empty(len(seg))
    k.read_noise(seg, rb, OX0, OX1, 20, 20, out)
    np.testing.assert_allclose(out, ref_read_noise(seg, rb), rtol=1e-9, atol=1e-12)


def test_bias_shifts(case):
    seg, rb = case
    n = len(seg)
    count, top, noise = np.empty(n), np.empty(n), np.empty(n)
    k.bias_shifts(rb, 30, 15, 3.0, 30, count, top, noise)
    for a in range(n):
        c, t, s = ref_shifts(rb[a])
        assert count[a] == c
        assert top[a] == pytest.approx(t, abs=1e-6)
        assert noise[a] == pytest.approx(s, abs=1e-6)
    assert count[2] == 1 and top[2] == pytest.approx(30, abs=1)
    assert count[[0, 1, 3]].tolist() == [0, 0, 0]


def test_shift_profile_is_the_eo_pipe_convolution():
    p = np.random.default_rng(3).normal(size=300).cumsum()
    out = np.empty(300)
    k.shift_profile(p, 30, out)
    kernel = np.concatenate([np.arange(30), np.arange(-29, 0)]) / 435.0
    conv = np.concatenate([np.zeros(29), np.convolve(p, kernel, mode="valid"), np.zeros(30)])
    np.testing.assert_allclose(out, conv[:300], atol=1e-9)


def test_eper(case):
    seg, rb = case
    n = len(seg)
    noise = np.full(n, 5.0)
    got = [np.empty(n) for _ in range(4)]
    x0, x1, y0, y1 = DATASEC
    k.eper(seg, rb, x0, x1, y0, y1, 3, noise, 20.0, *got)
    np.testing.assert_allclose(np.column_stack(got), ref_eper(seg, rb, noise), rtol=1e-9)
    assert np.isnan(got[0][3])  # a dead amp has nothing to defer


def test_data_sample(case):
    seg, rb = case
    stats = np.empty((len(seg), 5))
    x0, x1, y0, y1 = DATASEC
    k.data_sample(seg, rb, x0, x1, y0, y1, 4, stats)
    np.testing.assert_allclose(stats, ref_sample(seg, rb), atol=1e-9)


def test_grouped_quartiles_give_an_unbiased_sigma_for_integer_data():
    rng = np.random.default_rng(0)
    for sigma in (2.0, 4.5, 7.0):
        d = np.rint(rng.normal(0, sigma, 400_000)).astype(np.int64)
        iqr = grouped_quantile(d, 0.75) - grouped_quantile(d, 0.25)
        assert iqr * k.IQR_TO_SIGMA == pytest.approx(np.sqrt(sigma**2 + 1 / 12), rel=0.01)


@pytest.mark.parametrize(("sharp", "use_runs"), [(False, True), (True, False)])
def test_defects(case, sharp, use_runs):
    seg, rb = case
    n = len(seg)
    x0, x1, y0, y1 = DATASEC
    stats = np.empty((n, 5))
    k.data_sample(seg, rb, x0, x1, y0, y1, 4, stats)
    med = stats[:, 0]
    sigma = np.maximum((stats[:, 2] - stats[:, 1]) * k.IQR_TO_SIGMA, 0.5)
    tb, td, winsor = 5 * sigma, 0.8 * med, 3 * sigma
    td[3] = np.nan
    sat = np.full(n, 100000.0)
    border = np.zeros((n, 4), dtype=np.int64)
    border[:, 0] = 7
    border[0, 1] = 7
    out = np.empty((n, 6))
    k.defects(
        seg, rb, x0, x1, y0, y1, sat, med, tb, td, winsor, sharp, 2.5, use_runs, 20, 10.0, 7,
        border, 100, 1 << 16, out,
    )  # fmt: skip
    ref = ref_defects(seg, rb, sat, med, tb, td, winsor, sharp, use_runs, border)
    np.testing.assert_array_equal(out[:, :5], ref)
    # what was put in is found
    assert out[0, 2] >= 1 and out[0, 4] == 1  # the hot and the dead column
    assert out[1, 0] == 3  # saturated
    assert 10 <= out[1, 1] <= 16  # the hot pixels (and the saturated ones; not the cosmic ray)
    assert out[1, 5] >= 12  # the cosmic ray's pixels are a track
    assert out[3, 1:3].tolist() == [0, 0]


def test_track_like():
    shape = (60, 60)
    mask = np.zeros(shape, dtype=bool)
    for t in range(15):
        mask[5 + t, 5 + (2 * t) // 3] = True  # a slanted track
    mask[30:33, 30:33] = True  # a blob
    mask[40, 10] = mask[40, 12] = True  # isolated pixels
    for t in range(8):
        mask[50, 40 + t] = True  # a horizontal track
    cv, cu = np.nonzero(mask)
    out = np.empty(len(cv), dtype=bool)
    root = np.empty(len(cv), dtype=np.int64)
    k.track_like(cv.astype(np.int64), cu.astype(np.int64), len(cv), 4, 0.9, 2.5, 100, out, root)
    np.testing.assert_array_equal(out, ref_track_like(cv, cu, shape))
    lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    same = lab[cv, cu][:, None] == lab[cv, cu][None, :]
    np.testing.assert_array_equal(root[:, None] == root[None, :], same)
    assert out.sum() == 15 + 8


def test_divisadero(case):
    seg, rb = case
    n = len(seg)
    x0, x1, y0, y1 = DATASEC
    stats = np.empty((n, 5))
    k.data_sample(seg, rb, x0, x1, y0, y1, 4, stats)
    med = stats[:, 0]
    clip = np.full(n, 300.0)
    edges = np.array([[True, True], [False, True], [True, False], [True, True]])
    out = np.empty(n)
    k.divisadero(seg, rb, x0, x1, y0, y1, med, clip, 10, 210, 25, edges, out)
    ref = ref_divisadero(seg[:3], rb[:3], med[:3], clip[:3], edges[:3])
    np.testing.assert_allclose(out[:3], ref, rtol=1e-9)
    assert np.isnan(out[3])  # dead: no response to normalise


def test_amp_metrics_columns_and_dead_amp(case):
    seg, rb = case
    n = len(seg)
    m = amp_metrics(seg, rb, [1.5] * n, [1.0e5] * n, "FLAT", 15.0, datasec=DATASEC)
    assert set(m) == set(AMP_COLUMNS)
    assert all(len(v) == n for v in m.values())
    assert m["dead"].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(m["read_noise_e"], 1.5 * m["read_noise_adu"])
    assert m["bias_shifts"][2] == 1
    assert m["saturated_pixels"][1] == 3
    assert m["signal_ratio"][0] == pytest.approx(1.0, abs=0.01)


def test_zeroed_amps_are_dead_not_errors():
    seg = np.zeros((16, 2048, 576), dtype=np.int32)
    datasec = (10, 522, 0, 2002)
    rb, _ = isr.overscan_bias(seg, datasec)
    pl = amp_placements("E2V", 16)
    for image_type in ("BIAS", "DARK", "FLAT", "OBJECT", None):
        m = amp_metrics(seg, rb, [1.5] * 16, [1e5] * 16, image_type, 30.0, datasec=datasec,
                        placements=pl)  # fmt: skip
        assert m["dead"].tolist() == [1] * 16
        assert np.all(m["read_noise_adu"] == 0)
        assert np.all(m["bias_shifts"] == 0)


def test_image_categories():
    assert [image_category(t) for t in ("BIAS", "zero", "DARK", "FLAT", "sflat", "OBJECT")] == [
        "bias", "bias", "dark", "flat", "flat", "science",
    ]  # fmt: skip
    assert [image_category(t) for t in ("SKYEXP", "ACQ", "FE55", "SPOT", None, "")] == [
        "science", "science", "default", "default", "default", "default",
    ]  # fmt: skip


def test_amp_constants_replace_implausible_table_entries():
    cam = load_camera("LSSTCam")
    det = cam.detector("R01_S02")  # holds amps with 10-20 e- read noise, all plausible
    c = amp_constants(det, amp_placements(det.vendor, 16))
    assert np.all((c["gain"] >= 0.5) & (c["gain"] <= 3))
    assert np.all(c["saturation"] >= 7e4)
    for d in cam.detectors:
        for a in d.amps:
            if a.saturation < 7e4:  # the real tables hold a few
                c = amp_constants(d, amp_placements(d.vendor, len(d.amps)))
                assert c["saturation"].min() >= 7e4
                return


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_level0_to_ccd_matches_the_reader(turns):
    from core.exposure import DetectorImage

    fake = DetectorImage.__new__(DetectorImage)
    fake.ccd_shape, fake.quarter_turns = (40, 30), turns
    rows, cols = np.meshgrid(np.arange(30 if turns % 2 else 40), np.arange(40 if turns % 2 else 30))
    x, y = level0_to_ccd(rows.ravel(), cols.ravel(), (40, 30), turns)
    ex, ey = fake.array_to_ccd(rows.ravel(), cols.ravel())
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)


# ---------------------------------------------------------------------------------------------
# Simulated CCDs with known truth


def simulated(detector, image_type, seed, faults=()):
    from core.simulate import EXPTIME, simulate_ccd

    sim = simulate_ccd(detector, seed=seed, image_type=image_type, faults=faults)
    fmt = {"ITL": (3, 512, 0, 2000), "E2V": (10, 522, 0, 2002)}[sim.vendor]
    rb, _ = isr.overscan_bias(sim.segments, fmt)
    truth = {a["amp"]: a for a in sim.truth["amps"]}
    gains = [truth[p.name]["gain"] for p in sim.placements]
    sats = [truth[p.name]["saturation"] for p in sim.placements]
    m = amp_metrics(
        sim.segments, rb, gains, sats, image_type, EXPTIME[image_type], datasec=fmt,
        placements=sim.placements,
    )  # fmt: skip
    return sim, m, [truth[p.name] for p in sim.placements]


@pytest.mark.parametrize(
    ("detector", "image_type", "seed"),
    [("R22_S11", "bias", 11), ("R01_S11", "science", 12), ("R00_SG0", "flat", 13)],
)
def test_bias_level_and_read_noise_match_the_injected(detector, image_type, seed):
    sim, m, truth = simulated(detector, image_type, seed)
    rn = np.array([t["read_noise_adu"] for t in truth])
    bias = np.array([t["bias"] for t in truth])
    np.testing.assert_allclose(m["read_noise_adu"], rn, rtol=0.05)
    np.testing.assert_allclose(m["bias_level"], bias, atol=0.5)
    assert np.all(m["bias_shifts"] == 0)
    assert np.all(m["dead"] == 0)


@pytest.mark.parametrize("image_type", ["flat", "science"])
def test_cti_and_bias_shifts_detected_when_injected_and_not_otherwise(image_type):
    from core.simulate import EPER_TAIL, Fault

    faults = [
        Fault("R22_S11", "C13", "high_cti", {"serial_cti": 1e-4}),
        Fault("R22_S11", "C04", "bias_jump", {"row": 900, "step": 15.0}),
    ]
    sim, m, truth = simulated("R22_S11", image_type, 21, faults)
    names = [p.name for p in sim.placements]
    eper = sum(EPER_TAIL[:3])  # the share of the deferred charge in the first 3 columns
    i = names.index("C13")
    assert m["serial_cti"][i] == pytest.approx(1e-4 * eper, rel=0.05)
    others = np.arange(len(names)) != i
    assert np.all(m["serial_cti"][others] < 5e-6)
    cti_true = np.array([t["serial_cti"] for t in truth]) * eper
    np.testing.assert_allclose(m["serial_cti"][others], cti_true[others], atol=1.5e-6)
    assert np.all(m["parallel_cti"] < 3e-6)
    j = names.index("C04")
    assert m["bias_shifts"][j] == 1
    assert m["bias_shift_max"][j] == pytest.approx(15.0, abs=1.5)
    assert m["bias_shifts"].sum() == 1


# ---------------------------------------------------------------------------------------------
# The real ts8 amp (Segment00 = C00 holds real pixels; the other 15 are zeroed)


@pytest.mark.realdata
def test_real_ts8_amp(obs_lsst):
    from core.rawfile import read_raw

    raw = read_raw(obs_lsst / "raw" / "201807241028453-RTM-010-S11-det067.fits")
    det = load_camera("LSSTCam").detector(raw.info.detector)
    c = amp_constants(det, raw.placements)
    rb, _ = isr.overscan_bias(raw.segments, raw.datasec)
    m = amp_metrics(raw, rb, c["gain"], c["saturation"], raw.info.image_type, 21.9)
    i = list(m["amp"]).index("C00")
    assert m["bias_level"][i] == pytest.approx(27026, abs=2)
    assert m["read_noise_adu"][i] == pytest.approx(6.5, abs=0.2)
    assert m["signal_median"][i] == pytest.approx(47803 - 27026, abs=30)
    assert m["dead"][i] == 0
    assert m["serial_cti"][i] < 5e-6 and m["parallel_cti"][i] < 3e-6
    assert m["divisadero_tearing"][i] < 0.02
    assert m["bright_columns"][i] == 0 and m["dark_columns"][i] == 0  # edge roll-off is left out
    others = np.arange(16) != i
    assert np.all(m["dead"][others] == 1)
    # the ingest's copy of the serial overscan, handed in, gives what the metrics' own gives
    bare = amp_metrics(raw.segments, rb, c["gain"], c["saturation"], raw.info.image_type, 21.9,
                       datasec=raw.datasec, placements=raw.placements,
                       serial=isr.serial_overscan(raw.segments, raw.datasec))  # fmt: skip
    for name in ("bias_level", "read_noise_adu", "serial_cti"):
        np.testing.assert_array_equal(m[name], bare[name])


def test_histograms_beyond_the_first_window():
    """Levels spread wider than the window around the probe take the whole-range path."""
    seg = make_segments(2, 9, signal=0.0).astype(np.int64)
    x0, x1, y0, y1 = DATASEC
    ramp = np.linspace(0, 120000, (y1 - y0) * (x1 - x0)).reshape(y1 - y0, x1 - x0)
    seg[0, y0:y1, x0:x1] += ramp.astype(np.int64)  # quartiles far outside any window
    seg[1, NY // 2 - 40 : NY // 2 + 40, OX0:OX1] -= 20000  # the probe row sits on a minority
    seg = seg.astype(np.int32)
    rb = row_bias_of(seg)
    stats = np.empty((2, 5))
    k.data_sample(seg, rb, x0, x1, y0, y1, 4, stats)
    np.testing.assert_allclose(stats, ref_sample(seg, rb), atol=1e-9)
    out = np.empty(2)
    k.bias_level(seg, OX0, OX1, out)
    np.testing.assert_allclose(out, ref_bias_level(seg), atol=1e-9)
