"""ISR and pyramid kernels against the slow numpy references in tests/core/reference.py."""

from __future__ import annotations

import numpy as np
import pytest

from core import isr
from core.layout import amp_placements
from tests.core import reference as ref

ITL = (3, 512, 0, 2000)
E2V = (10, 522, 0, 2002)


def fake_segments(rng, n_amp, datasec, ny=2048, nx=576, bias=25000.0, noise=5.0):
    seg = rng.normal(bias, noise, (n_amp, ny, nx))
    seg += rng.normal(0, 3, (n_amp, ny, 1))  # row-to-row bias wander, shared by data and overscan
    x0, x1, y0, y1 = datasec
    seg[:, y0:y1, x0:x1] += rng.uniform(0, 3000, (n_amp, y1 - y0, x1 - x0))
    return np.rint(seg).astype(np.int32)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (2, 2), (5, 5), (9, 8), (40, 17), (64, 59)])
def test_robust_rows_match_reference(rows, cols):
    from core._isr_kernels import robust_rows

    rng = np.random.default_rng(rows * cols)
    block = rng.normal(100, 4, (rows, cols)).round()
    if block.size > 4:
        block[0, 0] = 5000.0  # a cosmic ray in the overscan
    out = np.empty(rows)
    robust_rows(block, 3.0, out, False)
    ints = np.empty(rows)
    robust_rows(block.astype(np.int32), 3.0, ints, True)
    np.testing.assert_allclose(ints, ref.robust_rows(block), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out, ref.robust_rows(block), rtol=0, atol=1e-9)


@pytest.mark.parametrize("noise", [0.0, 0.3, 4.0, 60.0, 3000.0])
def test_counted_mad_is_the_selected_one(noise):
    """The counted MAD of integers about whole and half-integer row medians equals numpy's
    median of the deviations; deviations wider than its bins give NaN (and robust_rows then
    selects, which the reference comparison checks)."""
    from core._isr_kernels import median_abs_dev_counting, robust_rows

    rng = np.random.default_rng(int(noise * 10))
    for rows, cols in ((1, 1), (7, 6), (64, 59), (401, 64)):
        block = np.rint(rng.normal(25000, noise, (rows, cols))).astype(np.int32)
        med = np.median(block, axis=1)
        want = np.median(np.abs(block[::4] - med[::4, None]))
        got = median_abs_dev_counting(block, med, 4, np.empty(1024, dtype=np.int64))
        if want < 500:
            assert got == want, (rows, cols, got, want)
        elif np.isfinite(got):  # only when the middle deviations fit the bins
            assert got == want
        out = np.empty(rows)
        robust_rows(block, 3.0, out, True)
        np.testing.assert_allclose(out, ref.robust_rows(block), rtol=0, atol=1e-9)
    wide = np.rint(rng.normal(25000, 5000, (64, 59))).astype(np.int32)
    med = np.median(wide, axis=1)
    assert np.isnan(median_abs_dev_counting(wide, med, 4, np.empty(1024, dtype=np.int64)))


def test_serial_overscan_matches_reference_and_finds_the_bias():
    rng = np.random.default_rng(3)
    small = (3, 512, 0, 40)
    seg = fake_segments(rng, 2, small, ny=64)
    got, _ = isr.overscan_bias(seg, small)
    ox0, ox1 = isr.IsrConfig().serial_columns(small, 576)
    want = ref.serial_overscan_rows(seg, ox0, ox1)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=0, atol=1e-3)
    # the per-row wander is followed: residual of the data rows against the row bias is flat
    assert abs(np.median(got) - 25000) < 1.5


def test_constant_and_zero_amps_do_not_crash():
    seg = np.zeros((16, 2048, 576), dtype=np.int32)
    row, col = isr.overscan_bias(seg, ITL, isr.IsrConfig(parallel=True))
    assert (row == 0).all() and (col == 0).all()


@pytest.mark.parametrize(
    ("vendor", "datasec", "n_amp"), [("ITL", ITL, 16), ("E2V", E2V, 16), ("ITL", ITL, 8)]
)
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_assembly_matches_reference(vendor, datasec, n_amp, turns):
    rng = np.random.default_rng(turns)
    seg = fake_segments(rng, n_amp, datasec)
    row_bias, col_bias = isr.overscan_bias(seg, datasec)
    got = isr.assemble_to_focal_plane(
        seg, datasec, amp_placements(vendor, n_amp), row_bias, col_bias, turns
    )
    want = ref.assemble(seg, datasec, vendor, row_bias)
    want = np.rot90(want, turns, axes=(1, 0))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("datasec", [ITL, E2V])
def test_parallel_overscan_matches_reference(datasec):
    """Each data column's parallel bias against the plain numpy version, on columns with a
    gradient along the row and a hot column in the overscan (which the clip must not hide)."""
    rng = np.random.default_rng(3)
    seg = fake_segments(rng, 4, datasec)
    x0, x1, _, y1 = datasec
    seg[:, y1:, x0:x1] += np.arange(x1 - x0, dtype=np.int32)[None, None, :] // 64
    seg[2, y1:, x0 + 100] += 400
    seg[1, y1 + 10, x0:x1] += 5000  # a row of cosmic-ray hits: clipped away
    row_bias, col_bias = isr.overscan_bias(seg, datasec, isr.IsrConfig(parallel=True))
    want = ref.parallel_overscan_cols(seg, row_bias, datasec)
    np.testing.assert_allclose(col_bias, want, rtol=0, atol=1e-3)  # float32 of the mean
    assert col_bias[2, 100] > 390
    assert np.abs(col_bias[1]).max() < 20


def test_raw_is_recovered_exactly_from_level0_and_bias():
    """raw = level0 + rint(row_bias) + rint(col_bias), pixel for pixel."""
    rng = np.random.default_rng(11)
    seg = fake_segments(rng, 16, E2V)
    row_bias, col_bias = isr.overscan_bias(seg, E2V, isr.IsrConfig(parallel=True))
    assert np.abs(col_bias).max() > 0  # the parallel correction really ran
    level0 = isr.assemble_to_focal_plane(seg, E2V, amp_placements("E2V"), row_bias, col_bias)
    bias_img = ref.assemble(seg, E2V, "E2V") - level0
    h = E2V[3]
    c00 = bias_img[:h, :512]  # C00 of an E2V CCD is not flipped: rows are v, columns u
    want = np.rint(row_bias[15, :h])[:, None] + np.rint(col_bias[15])[None, :]
    np.testing.assert_array_equal(c00, want.astype(np.int64))
    c17 = bias_img[h:, 7 * 512 :]  # C17 is flipped in x and y
    want = np.rint(row_bias[7, :h])[::-1, None] + np.rint(col_bias[7])[None, ::-1]
    np.testing.assert_array_equal(c17, want.astype(np.int64))


@pytest.mark.parametrize("shape", [(4000, 4072), (4004, 4096), (1001, 1024), (3, 5), (1, 1)])
def test_downsample_matches_reference(shape):
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, shape).astype(np.float32)
    if img.size > 10:
        img.flat[::7] = np.nan
    got = isr.downsample(img)
    np.testing.assert_allclose(
        got, ref.downsample2(img.astype(np.float64)), rtol=1e-6, equal_nan=True
    )


def test_pyramid_ends_near_128_and_keeps_the_mean():
    img = np.random.default_rng(1).integers(0, 1000, (4000, 4072)).astype(np.int32)
    levels = isr.pyramid(img)
    assert [lv.shape for lv in levels][-1] == (125, 128)
    assert len(levels) == 6
    assert levels[1].mean() == pytest.approx(img.mean(), rel=1e-6)


def test_bin_onto_grid_matches_a_plain_sum():
    rng = np.random.default_rng(5)
    img = rng.normal(0, 1, (37, 53))
    img[3, 4] = np.nan
    sums, counts = isr.bin_onto_grid(img, 5, 2, 16)
    pad = np.full((counts.shape[0] * 16, counts.shape[1] * 16), np.nan)
    pad[2 : 2 + 37, 5 : 5 + 53] = img
    blocks = pad.reshape(counts.shape[0], 16, counts.shape[1], 16)
    np.testing.assert_allclose(sums, np.nansum(blocks, axis=(1, 3)))
    np.testing.assert_array_equal(counts, np.isfinite(blocks).sum(axis=(1, 3)))


def test_overview_sums_and_means_match_numpy_to_the_bit():
    """The overview's levels: 2 x 2 sums in a fixed order and the bin means, whole grids and
    strided blocks of them (the watcher refreshes blocks), equal to numpy's."""
    from core.exposure import _bin_means, _coarsen

    rng = np.random.default_rng(6)
    sums = rng.normal(1000, 300, (64, 96)) * rng.integers(0, 65, (64, 96))
    counts = rng.integers(0, 65, (64, 96))
    counts[sums == 0] = 0
    for s, c in ((sums, counts), (sums[8:40, 16:80], counts[8:40, 16:80])):
        np.testing.assert_array_equal(_coarsen(s), ref.coarsen2_sum(s))
        np.testing.assert_array_equal(_coarsen(c), ref.coarsen2_sum(c))
        got = _bin_means(s, c)
        assert got.dtype == np.float32 and np.isnan(got[c == 0]).all()
        np.testing.assert_array_equal(got, ref.bin_means(s, c))


@pytest.mark.parametrize("shape", [(40, 34), (41, 35), (7, 9)])
def test_downsample_scaled_is_the_area_mean_of_the_scaled_image(shape):
    """Each amp box times its factor, then 2 x 2 means; a bin that straddles two amps is exact."""
    rng = np.random.default_rng(4)
    image = rng.integers(-50, 5000, size=shape).astype(np.int32)
    ny, nx = shape
    rows, cols = [0, ny // 2 + 1, ny], [0, nx // 3, 2 * nx // 3 + 1, nx]  # odd boundaries too
    boxes, factors, scaled = [], [], np.empty(shape)
    for i in range(2):
        for j in range(3):
            box = (rows[i], rows[i + 1], cols[j], cols[j + 1])
            f = 0.5 + rng.random() * 2.5
            boxes.append(box)
            factors.append(f)
            scaled[box[0] : box[1], box[2] : box[3]] = image[box[0] : box[1], box[2] : box[3]] * f
    got = isr.downsample_scaled(image, boxes, np.array(factors))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref.downsample2(scaled), rtol=1e-6)
    with pytest.raises(ValueError, match="cover"):
        isr.downsample_scaled(image, boxes[:-1], np.array(factors[:-1]))
    # the ingest's one pass over level 0 for both: the pyramid and the scaled level, bit for bit
    levels, both = isr.pyramid_and_scaled(image, boxes, np.array(factors), min_size=4)
    alone = isr.pyramid(image, min_size=4)
    assert len(levels) == len(alone) > 2
    for a, b in zip(levels, alone):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(both, got)
    levels, both = isr.pyramid_and_scaled(image, boxes, np.array(factors), min_size=100)
    assert len(levels) == 1 and levels[0] is image
    np.testing.assert_array_equal(both, got)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_amp_array_box_is_where_the_turned_ccd_puts_the_amp(turns):
    """``core.layout.amp_array_box`` against ``np.rot90`` of an image of amp numbers (the same
    turn the level-0 reference uses): each box holds its amp's pixels and nothing else."""
    from core.layout import amp_array_box

    w, h = 7, 5
    amps = [{"x0": j * w, "y0": i * h, "nx": w, "ny": h} for i in range(2) for j in range(8)]
    ccd = np.empty((2 * h, 8 * w), dtype=int)
    for k, a in enumerate(amps):
        ccd[a["y0"] : a["y0"] + h, a["x0"] : a["x0"] + w] = k
    turned = np.rot90(ccd, turns, axes=(1, 0))
    for k, a in enumerate(amps):
        r0, r1, c0, c1 = amp_array_box(a, ccd.shape, turns)
        assert (turned[r0:r1, c0:c1] == k).all() and (turned == k).sum() == (r1 - r0) * (c1 - c0)


def test_an_overview_grid_taken_over_starts_empty_and_leaves_the_old_one_unusable():
    """The watcher hands a finished exposure's grid to the next one (no new 256 MB to fault
    in): the next starts from zeros in the same memory; the old grid can no longer write."""
    from core.exposure import OverviewGrid

    bounds = (-1000.0, -800.0, 1000.0, 900.0)
    old = OverviewGrid.for_bounds(bounds)
    old.add(1, 2, np.full((3, 4), 7.5), np.full((3, 4), 4, dtype=np.int64))
    memory = old.sums.ctypes.data
    new = OverviewGrid.for_bounds(bounds, reuse=old)
    assert new.sums.ctypes.data == memory
    assert not new.sums.any() and not new.counts.any()
    assert old.sums is None and old.counts is None
    other = OverviewGrid.for_bounds((-2000.0, -800.0, 1000.0, 900.0), reuse=old)  # taken: new
    assert other.sums.shape != new.sums.shape and not other.sums.any()


def test_medians_counted_in_a_histogram_are_numpy_medians():
    """``median_from_hist`` (one walk; entries below the histogram too) and ``median_counting``
    (a row counted into it) against ``np.median``, for odd and even counts."""
    from core import _isr_kernels as k

    rng = np.random.default_rng(11)
    for n in (1, 2, 7, 60, 61):
        row = rng.integers(25000, 25040, size=n).astype(np.int32)
        assert k.median_counting(row, np.empty(64, dtype=np.int64)) == np.median(row)
        hist = np.bincount(row - 25000, minlength=40)
        assert k.median_from_hist(hist, 0, 39, n) + 25000 == np.median(row)
        below = rng.integers(0, 24990, size=n // 3)  # left out of the histogram, counted in c0
        both = np.concatenate([below, row])
        got = k.median_from_hist(hist, 0, 39, both.size, below.size) + 25000
        assert got == max(np.median(both), 25000)  # a middle rank below the bins reads as bin 0
    assert np.isnan(k.median_counting(np.array([0, 100], dtype=np.int32), np.empty(8, np.int64)))
