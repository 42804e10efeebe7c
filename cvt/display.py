"""Display maths for the viewer: stretches, limits, zscale and colour maps. Pure numpy, no Qt.

The viewer's redraw is staged (ginga's ``whence``): new data < stretch and limits < colour map <
overlays. This module is the middle two stages. A *transfer* is a monotone map from data values to
``[0, 1]`` that folds the limits and the stretch together (for histogram equalisation, the
equalised cumulative distribution as breakpoints); there is one per amp, CCD or the whole plane,
by scope. The result is a ``uint8`` *index* image: 0 means "no data" (drawn
transparent) and 1..255 the colour map, so a colour-map change only swaps a 256-entry table and
never touches the pixels, and a stretch change never re-reads the data.

Statistics are kept as small sorted samples per amp (``sorted_sample``), computed once when data
arrive; limits, zscale and the equalisation are cheap functions of those samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import pairwise

import numpy as np

from cvt import _display_kernels as _k

STRETCHES = ("linear", "log", "sqrt", "asinh", "histeq")
LIMIT_MODES = ("minmax", "percentile", "zscale", "manual")
SCOPES = ("amp", "ccd", "global")
N_COLOURS = 255  # index 0 is "no data"
SAMPLE_SIZE = 4096  # values kept per amp for limits and equalisation
TRANSFER_POINTS = 1024  # breakpoints of an equalised distribution
BODY_LUT_SIZE = 8192
STACKED_SIZE = 1024  # steps of the per-row tables of tiles with many amps
MANY_AMPS = 8
MANY_PARTS = 16  # samples merged, or rows built, in one kernel call from this many
LOG_EXPONENT = 1000.0  # ds9's default for the log stretch
ASINH_SOFTENING = 10.0  # asinh(10 t) / asinh(10): linear near 0, logarithmic above ~0.1


@dataclass(frozen=True)
class DisplaySettings:
    """What the user chose; the model the window's controls edit. Histogram equalisation per
    amp over each amp's whole range is the CVT's default."""

    stretch: str = "histeq"
    limits: str = "minmax"
    percentile: tuple[float, float] = (0.5, 99.5)
    manual: tuple[float, float] = (0.0, 1.0)
    scope: str = "amp"
    cmap: str = "grey"
    contrast: float = 0.25  # zscale contrast

    def __post_init__(self) -> None:
        if self.stretch not in STRETCHES:
            raise ValueError(f"unknown stretch {self.stretch!r}; expected one of {STRETCHES}")
        if self.limits not in LIMIT_MODES:
            raise ValueError(f"unknown limits {self.limits!r}; expected one of {LIMIT_MODES}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; expected one of {SCOPES}")
        if self.cmap not in COLORMAPS:
            raise ValueError(
                f"unknown colour map {self.cmap!r}; expected one of {tuple(COLORMAPS)}"
            )
        lo, hi = self.percentile
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentile}")

    def with_(self, **changes) -> DisplaySettings:
        return replace(self, **changes)

    def stage_changed(self, other: DisplaySettings) -> str | None:
        """The earliest redraw stage a change from ``other`` to ``self`` touches."""
        if (self.stretch, self.limits, self.percentile, self.manual, self.scope, self.contrast) != (
            other.stretch,
            other.limits,
            other.percentile,
            other.manual,
            other.scope,
            other.contrast,
        ):
            return "stretch"
        if self.cmap != other.cmap:
            return "cmap"
        return None


# ---------------------------------------------------------------------------------------------
# Stretches and limits


def stretch_curve(name: str, t: np.ndarray) -> np.ndarray:
    """The stretch of normalised values ``t`` in [0, 1] (clipped), onto [0, 1] (ds9's curves)."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    if name == "linear":
        return t
    if name == "log":
        return np.log10(LOG_EXPONENT * t + 1.0) / math.log10(LOG_EXPONENT + 1.0)
    if name == "sqrt":
        return np.sqrt(t)
    if name == "asinh":
        return np.arcsinh(ASINH_SOFTENING * t) / math.asinh(ASINH_SOFTENING)
    raise ValueError(f"no curve for stretch {name!r}")


def sorted_sample(values: np.ndarray, size: int = SAMPLE_SIZE) -> np.ndarray:
    """The finite values, sorted, thinned to at most ``size`` evenly spaced order statistics
    (so quantiles, the minimum and the maximum of the sample are those of the data)."""
    v = np.asarray(values, dtype=np.float32).ravel()
    v = np.sort(v[np.isfinite(v)])
    if v.size > size:
        v = v[np.linspace(0, v.size - 1, size).round().astype(np.int64)]
    return v


def _clipped_boxes(rects, width: int, shape: tuple[int, ...]) -> np.ndarray:
    """``rects`` as an ``(n, width)`` int64 array whose last four columns, ``r0, r1, c0, c1``,
    are clipped to an image of ``shape`` as slicing it would (the kernels do not check)."""
    boxes = np.array(rects, dtype=np.int64).reshape(-1, width)
    rows, cols = boxes[:, -4:-2], boxes[:, -2:]
    np.clip(rows, 0, shape[0], out=rows)
    np.clip(cols, 0, shape[1], out=cols)
    return boxes


RECT_BATCH = 256  # rects gathered at once by ``rect_samples`` (a few MB of pixels)


def rect_samples(
    image: np.ndarray, rects: Sequence[tuple[int, int, int, int]], size: int = SAMPLE_SIZE
) -> list[np.ndarray]:
    """``sorted_sample(image[r0:r1, c0:c1], size)`` of every rect ``(r0, r1, c0, c1)`` (bounds
    not negative): the same arrays (views of one buffer), with the interpreter lock free. The
    pixels are gathered and thinned by kernels and each rect sorted by numpy's own sort (which
    leaves the lock, and is ten times numba's); a loop of ``sorted_sample`` over the 3,216 amps
    of an overview level held the lock 0.1-0.3 s in a worker, at each level of each open."""
    img = np.ascontiguousarray(image, dtype=np.float32)  # one compiled form of each kernel
    boxes = _clipped_boxes(rects, 4, img.shape)
    m = boxes.shape[0]
    areas = np.maximum(boxes[:, 1] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 2], 0)
    out = np.empty(int(np.minimum(areas, size).sum()), dtype=np.float32)
    ends = np.zeros(m + 1, dtype=np.int64)  # of each rect's sample in ``out``
    pixels = np.empty(
        max((int(areas[b : b + RECT_BATCH].sum()) for b in range(0, m, RECT_BATCH)), default=0),
        dtype=np.float32,
    )  # one buffer for every batch
    ks = np.full(min(m, RECT_BATCH), size, dtype=np.int64)
    for b0 in range(0, m, RECT_BATCH):
        b1 = min(b0 + RECT_BATCH, m)
        offsets = np.empty(b1 - b0 + 1, dtype=np.int64)
        _k.gather_finite_rects(img, boxes[b0:b1], pixels, offsets)
        bounds = offsets.tolist()
        for a, b in pairwise(bounds):
            pixels[a:b].sort()
        np.cumsum(np.minimum(np.diff(offsets), size), out=ends[b0 + 1 : b1 + 1])
        ends[b0 + 1 : b1 + 1] += ends[b0]
        _k.thin_rows(pixels, offsets, ks[: b1 - b0], out[ends[b0] :], ends[b0 : b1 + 1] - ends[b0])
    bounds = ends.tolist()
    return [out[a:b] for a, b in pairwise(bounds)]


def merge_samples(samples: Iterable[np.ndarray], size: int = SAMPLE_SIZE) -> np.ndarray:
    """One sorted sample from several (each weighted by its own length)."""
    parts = [s for s in samples if s.size]
    if not parts:
        return np.empty(0, dtype=np.float32)
    total = sum(s.size for s in parts)
    if total > 4 * size:  # thin each part first (its own order statistics): no huge sort
        if len(parts) > MANY_PARTS:  # one kernel, not a numpy call per part
            return sorted_sample(_thin_packed(*_pack(parts), 2 * size, total), size)
        parts = [_thin(s, max(1, round(2 * size * s.size / total))) for s in parts]
    return sorted_sample(np.concatenate(parts), size)


def _pack(samples: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Samples as one array and their offsets (the kernels' form)."""
    offsets = np.zeros(len(samples) + 1, dtype=np.int64)
    np.cumsum([s.size for s in samples], out=offsets[1:])
    values = np.concatenate(samples) if len(samples) else np.empty(0, dtype=np.float32)
    return values, offsets


def _thin_packed(values: np.ndarray, offsets: np.ndarray, n: int, total: int) -> np.ndarray:
    """``_thin`` of every packed row to its share ``max(1, round(n * size / total))``."""
    sizes = np.diff(offsets)
    ks = np.maximum(1, np.rint(n * sizes / total)).astype(np.int64)
    kept = np.minimum(ks, sizes)
    out_offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(kept, out=out_offsets[1:])
    out = np.empty(int(out_offsets[-1]), dtype=values.dtype)
    _k.thin_rows(values, offsets, ks, out, out_offsets)
    return out


def _thin(sorted_values: np.ndarray, n: int) -> np.ndarray:
    if sorted_values.size <= n:
        return sorted_values
    return sorted_values[np.linspace(0, sorted_values.size - 1, n).round().astype(np.int64)]


def minmax_limits(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    return float(v.min()), float(v.max())


def percentile_limits(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    a, b = np.percentile(v, [lo, hi])
    return float(a), float(b)


def limits_of(sample: np.ndarray, settings: DisplaySettings) -> tuple[float, float]:
    """The display limits of one scope's sorted sample under ``settings``."""
    if settings.limits == "manual":
        return float(settings.manual[0]), float(settings.manual[1])
    if sample.size == 0:
        return (0.0, 1.0)
    if settings.limits == "minmax":
        return float(sample[0]), float(sample[-1])
    if settings.limits == "percentile":
        lo, hi = np.percentile(sample, settings.percentile)
        return float(lo), float(hi)
    lo, hi = zscale_packed(sample, np.array([0, sample.size]), settings.contrast)
    return float(lo[0]), float(hi[0])


def zscale_packed(
    values: np.ndarray,
    offsets: np.ndarray,
    contrast: float = 0.25,
    n_samples: int = 1000,
    max_reject: float = 0.5,
    min_npixels: int = 5,
    krej: float = 2.5,
    max_iterations: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """IRAF's zscale limits of every packed row ``values[offsets[r]:offsets[r + 1]]`` (any
    order, NaN allowed) in one kernel call that leaves the interpreter lock free; (0, 1) for an
    empty row. The limits are the median -/+ the slope of a line fitted to the sorted sample
    (every ``size / n_samples``-th finite value, outliers rejected iteratively), divided by
    ``contrast``, over half the sample: as IRAF ``display`` and astropy's ``ZScaleInterval``.
    A numpy form per amp, in a loop over 3,216 amps, held the lock for 1.0-1.7 s per level
    (GUI stalls up to 100 ms); the tests keep it as the reference, equal to the last bit or two
    (the line fit's dot products, BLAS in numpy, are summed pairwise here)."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lo = np.zeros(offsets.size - 1)
    hi = np.ones(offsets.size - 1)
    _k.zscale_rows(
        values.ravel(), offsets, int(n_samples), float(contrast), float(max_reject),
        int(min_npixels), float(krej), int(max_iterations), lo, hi,
    )  # fmt: skip
    return lo, hi


@dataclass(frozen=True)
class Transfer:
    """The map data value -> [0, 1] of one scope key: the limits, then the stretch curve, or,
    for histogram equalisation, the breakpoints ``xs`` -> ``ys`` of the equalised cumulative
    distribution. Below the lower limit maps to 0 and above the upper to 1; a degenerate range
    (a dead amp: one constant value) maps that value to 0, so a dead amp is drawn dark."""

    lo: float
    hi: float
    curve: str  # a stretch curve, or "interp" for xs -> ys
    xs: np.ndarray | None = None
    ys: np.ndarray | None = None

    def __call__(self, data) -> np.ndarray:
        """The transfer in float64 (the slow, exact form; ``index`` is the fast one)."""
        if self.curve == "interp":
            return np.interp(data, self.xs, self.ys)
        t = (np.asarray(data, dtype=np.float64) - self.lo) / (self.hi - self.lo)
        return stretch_curve(self.curve, t)

    def index(self, data: np.ndarray) -> np.ndarray:
        """The uint8 index image: 0 for NaN, else 1..255. In place on float32 temporaries
        (about 1 ms for a 512 x 512 tile; ``np.interp`` on unsorted data costs 50)."""
        if self.curve == "interp":
            return self._index_equalised(data)
        t = np.subtract(data, np.float32(self.lo), dtype=np.float32)
        t *= np.float32(1.0 / (self.hi - self.lo))
        return _curve_index(t, self.curve)

    @cached_property
    def _body(self) -> tuple[float, float, np.ndarray]:
        """A uniform lookup table over the central 96 % of the equalised distribution; the tails
        (stars, hot pixels: a uniform table over them would be too coarse for the sky) go
        through the exact ``np.interp``."""
        lo, hi = np.interp([0.02, 0.98], self.ys, self.xs)
        if not hi > lo:
            lo, hi = self.lo, self.hi
        grid = np.linspace(lo, hi, BODY_LUT_SIZE)
        lut = _to_index(np.interp(grid, self.xs, self.ys).astype(np.float32))
        return float(lo), float(hi), np.r_[lut, np.uint8(0)]

    def _index_equalised(self, data: np.ndarray) -> np.ndarray:
        lo, hi, lut = self._body
        y = np.subtract(data, np.float32(lo), dtype=np.float32)
        y *= np.float32((BODY_LUT_SIZE - 1) / (hi - lo))
        y += np.float32(0.5)
        outside = (y < 0.0) | (y >= BODY_LUT_SIZE)  # NaN compares False: not outside
        np.clip(y, 0.0, BODY_LUT_SIZE - 1, out=y)
        np.copyto(y, np.float32(BODY_LUT_SIZE), where=np.isnan(y))  # the last entry: no data
        out = lut[y.astype(np.uint16)]
        if outside.any():
            x = np.asarray(data)[outside]
            out[outside] = _to_index(np.interp(x, self.xs, self.ys).astype(np.float32))
        return out


def _curve_index(t: np.ndarray, curve: str) -> np.ndarray:
    """Normalised values (float32, modified in place) through a stretch curve, to indices."""
    np.clip(t, 0.0, 1.0, out=t)
    if curve == "log":
        t *= np.float32(LOG_EXPONENT)
        t += np.float32(1.0)
        np.log10(t, out=t)
        t *= np.float32(1.0 / math.log10(LOG_EXPONENT + 1.0))
    elif curve == "sqrt":
        np.sqrt(t, out=t)
    elif curve == "asinh":
        t *= np.float32(ASINH_SOFTENING)
        np.arcsinh(t, out=t)
        t *= np.float32(1.0 / math.asinh(ASINH_SOFTENING))
    return _to_index(t)


def _to_index(t: np.ndarray) -> np.ndarray:
    """[0, 1] (float32, modified in place) to index 1..255; NaN to 0."""
    t *= np.float32(N_COLOURS - 1)
    t += np.float32(1.5)
    # not np.nan_to_num: a dozen Python-level numpy calls, which held the interpreter lock in
    # the workers while the GUI thread waited for it
    np.copyto(t, np.float32(0.0), where=np.isnan(t))
    return t.astype(np.uint8)


def transfer(sample: np.ndarray, settings: DisplaySettings, n: int = TRANSFER_POINTS) -> Transfer:
    """The transfer of one scope key's sorted sample under ``settings``."""
    lo, hi = limits_of(sample, settings)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    eps = max(abs(lo), abs(hi), 1.0) * 1e-6
    if hi - lo <= eps:
        return Transfer(lo, lo + eps, "linear")
    if settings.stretch == "histeq":
        xs, ys = _equalise(sample, lo, hi, n)
        return Transfer(lo, hi, "interp", xs, ys)
    return Transfer(lo, hi, settings.stretch)


def _equalise(sample: np.ndarray, lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The equalised cumulative distribution of the sample's values within [lo, hi], at ``n``
    evenly spaced ranks; equal values share their mid-rank (xs strictly increasing)."""
    inside = sample[(sample >= lo) & (sample <= hi)].astype(np.float64)
    if inside.size < 2:
        return np.array([lo, hi]), np.array([0.0, 1.0])
    ranks = np.linspace(0.0, 1.0, min(n, inside.size))
    q = inside[(ranks * (inside.size - 1)).round().astype(np.int64)]
    xs, first = np.unique(q, return_index=True)
    last = np.r_[first[1:] - 1, q.size - 1]
    ys = 0.5 * (ranks[first] + ranks[last])
    if xs.size < 2:
        return np.array([lo, hi]), np.array([0.0, 1.0])
    if xs[0] > lo:
        xs, ys = np.r_[lo, xs], np.r_[0.0, ys]
    if xs[-1] < hi:
        xs, ys = np.r_[xs, hi], np.r_[ys, 1.0]
    return xs, ys


class TransferRows(Sequence):
    """The transfers of many scope keys as arrays (what the kernels fill): row ``r`` is
    ``Transfer(lo[r], hi[r], curve, xs[starts[r]:][:counts[r]], ys[...])``, made when asked
    for (a tile uses a few of thousands). ``kind``: 0 the linear map of a degenerate range or
    of an amp without statistics, 1 the stretch curve ``stretch``, 2 equalised (``interp``)."""

    def __init__(self, lo, hi, kind, stretch, xs, ys, starts, counts):
        self.lo, self.hi, self.kind, self.stretch = lo, hi, kind, stretch
        self.xs, self.ys, self.starts, self.counts = xs, ys, starts, counts
        self._made: dict[int, Transfer] = {}

    def __len__(self) -> int:
        return int(self.lo.size)

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[i] for i in range(*r.indices(len(self)))]
        r = int(r)
        if r < 0:
            r += len(self)
        t = self._made.get(r)
        if t is None:
            k = int(self.kind[r])
            if k == 2:
                s, c = int(self.starts[r]), int(self.counts[r])
                t = Transfer(
                    float(self.lo[r]), float(self.hi[r]), "interp",
                    self.xs[s : s + c], self.ys[s : s + c],
                )  # fmt: skip
            else:
                curve = self.stretch if k == 1 else "linear"
                t = Transfer(float(self.lo[r]), float(self.hi[r]), curve)
            self._made[r] = t
        return t

    @classmethod
    def of(cls, rows: Sequence[Transfer], stretch: str) -> TransferRows:
        """The array form of a list of transfers."""
        if isinstance(rows, TransferRows):
            return rows
        lo = np.array([t.lo for t in rows], dtype=np.float64)
        hi = np.array([t.hi for t in rows], dtype=np.float64)
        kind = np.array(
            [2 if t.curve == "interp" else 0 if t.curve == "linear" else 1 for t in rows],
            dtype=np.int8,
        )
        counts = np.array([t.xs.size if t.curve == "interp" else 0 for t in rows], np.int64)
        starts = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        parts = [t for t in rows if t.curve == "interp"]
        xs = np.concatenate([t.xs for t in parts]) if parts else np.empty(0)
        ys = np.concatenate([t.ys for t in parts]) if parts else np.empty(0)
        return cls(lo, hi, kind, stretch, xs.astype(np.float64), ys.astype(np.float64), starts,
                   counts)  # fmt: skip


@dataclass(frozen=True)
class Transfers:
    """The transfers of every scope key and which one each amp uses.

    ``row_of_amp[i]`` is the row of amp ``i`` (its own in ``amp`` scope, its CCD's in ``ccd``
    scope); ``fallback`` is the global row, used for pixels outside any amp (CCD gaps in the
    coarse overview) and for amps without statistics. ``generation`` grows with every rebuild,
    so that work done with an old stretch can be recognised and dropped. ``same_rows`` (if
    not None): which rows are those of the transfers of generation ``same_since`` (built from
    the very same samples under the same settings), so a tile drawn with those need not be
    stretched again.
    """

    generation: int
    settings: DisplaySettings
    rows: Sequence[Transfer]
    row_of_amp: np.ndarray  # (n_amps,) int, -1: use the fallback
    fallback: int
    samples: Sequence[np.ndarray] | None = None  # each row's sample (what ``same_rows`` uses)
    same_rows: np.ndarray | None = None
    same_since: int = -1

    def row(self, amp: int) -> int:
        r = int(self.row_of_amp[amp]) if 0 <= amp < self.row_of_amp.size else -1
        return r if r >= 0 else self.fallback

    def apply(self, data: np.ndarray, amp: int = -1) -> np.ndarray:
        return apply_transfer(data, self.rows[self.row(amp)])

    def limits(self, amp: int = -1) -> tuple[float, float]:
        t = self.rows[self.row(amp)]
        return t.lo, t.hi

    def unchanged_for(self, generation: int, rects, covered_all: bool) -> bool:
        """Whether an index image made with the transfers of ``generation`` for a tile whose
        amps occupy ``rects`` (covering all its pixels or not) is the one these would make."""
        if self.same_rows is None or generation != self.same_since:
            return False
        rows = [self.row(r[0]) for r in rects]
        if not covered_all or len(rects) > MANY_AMPS:
            rows.append(self.fallback)  # the stacked tables of many amps use it for gaps
        return bool(self.same_rows[rows].all()) if rows else False

    @cached_property
    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every row as a lookup table of ``STACKED_SIZE`` steps over its limits, for tiles
        holding many amps (the overview): (row of label + 1, lo, steps per unit, tables with a
        last column for NaN). Built once per ``Transfers``, in one kernel call."""
        arr = TransferRows.of(self.rows, self.settings.stretch)
        n = len(arr)
        lo = arr.lo.astype(np.float32)
        hi = arr.hi.astype(np.float32)
        grid = np.linspace(0.0, 1.0, STACKED_SIZE)
        tables = np.zeros((n, STACKED_SIZE + 1), dtype=np.uint8)
        if self.settings.stretch == "histeq":
            interp = np.flatnonzero(arr.kind == 2)
            _k.interp_index_rows(
                interp, arr.lo, arr.hi, grid, arr.xs, arr.ys, arr.starts, arr.counts, tables
            )
            # the other rows are the linear map of a degenerate range
            tables[arr.kind != 2, :STACKED_SIZE] = _to_index(grid.astype(np.float32))
        steps = np.float32(STACKED_SIZE - 1) / np.maximum(hi - lo, np.float32(1e-30))
        rows = np.r_[self.fallback, np.where(self.row_of_amp >= 0, self.row_of_amp, self.fallback)]
        return rows.astype(np.int32), lo, steps.astype(np.float32), tables

    def apply_labels(self, data: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Index image of a tile from a label image (amp index per pixel, -1 for none): one
        vectorised pass, however many amps the tile holds; exact for the stretch curves, within
        an index level of ``apply`` for equalisation (1024-step tables)."""
        rows_of, lo, steps, tables = self.stacked
        if self.settings.stretch != "histeq":
            # one curve for every row (a dead amp's degenerate range gives the same 0 or 1)
            rows = rows_of[labels.astype(np.int32) + 1]
            t = np.subtract(data, lo[rows], dtype=np.float32)
            t *= steps[rows] / np.float32(STACKED_SIZE - 1)
            return _curve_index(t, self.settings.stretch)
        # one kernel pass (the numpy form: a dozen array passes and Python-level calls, with
        # the interpreter lock held between them, for each overview tile read or re-stretched)
        out = np.empty((1, data.size), dtype=np.uint8)
        _k.stacked_index(
            np.ascontiguousarray(data, dtype=np.float32).reshape(1, -1),
            np.ascontiguousarray(labels, dtype=np.int32).reshape(1, -1),
            rows_of, lo, steps, tables, out,
        )  # fmt: skip
        return out.reshape(data.shape)


def build_transfers(
    generation: int,
    settings: DisplaySettings,
    amp_samples: Sequence[np.ndarray],
    amp_ccd: Sequence[int],
    n: int = TRANSFER_POINTS,
    previous: Transfers | None = None,
    global_sample: np.ndarray | None = None,
) -> Transfers:
    """Transfers for every amp, by ``settings.scope``, from per-amp sorted samples.

    ``amp_ccd[i]`` is the CCD index of amp ``i``; CCD and global samples are merged from the
    amps' samples (so an amp with more pixels in the sample weighs more). Rows built from the
    very same sample objects as ``previous`` under the same settings are marked in
    ``same_rows``; ``global_sample``: ``merge_samples(amp_samples)`` if the caller has it.
    """
    n_amps = len(amp_samples)
    amp_ccd = np.asarray(amp_ccd, dtype=np.int64)
    if global_sample is None:
        global_sample = merge_samples(amp_samples)
    sizes = np.fromiter((s.size for s in amp_samples), dtype=np.int64, count=n_amps)
    if settings.scope == "amp":
        samples = [*amp_samples, global_sample]
        row_of_amp = np.where(sizes > 0, np.arange(n_amps), -1).astype(np.int64)
    elif settings.scope == "ccd":
        n_ccd = int(amp_ccd.max()) + 1 if n_amps else 0
        groups: list[list[np.ndarray]] = [[] for _ in range(n_ccd)]
        for i, s in enumerate(amp_samples):
            groups[amp_ccd[i]].append(s)
        samples = [merge_samples(g) for g in groups] + [global_sample]
        ccd_sizes = np.array([s.size for s in samples[:-1]], dtype=np.int64)
        row_of_amp = (
            np.where(ccd_sizes[amp_ccd] > 0, amp_ccd, -1).astype(np.int64)
            if n_amps
            else np.zeros(0, dtype=np.int64)
        )
    else:
        samples = [global_sample]
        row_of_amp = np.zeros(n_amps, dtype=np.int64)
    if len(samples) > MANY_PARTS:
        rows: Sequence[Transfer] = _transfer_rows(samples, settings, n)
    else:
        unused = Transfer(0.0, 1.0, "linear")  # the row of an amp without statistics: never used
        rows = [transfer(s, settings, n) if s.size else unused for s in samples]
        if not samples[-1].size:  # the global row is the fallback: always a real transfer
            rows[-1] = transfer(samples[-1], settings, n)
    same, since = None, -1
    if (
        previous is not None
        and previous.settings == settings
        and previous.samples is not None
        and len(previous.samples) == len(samples)
    ):
        same = np.fromiter(
            (a is b for a, b in zip(samples, previous.samples)), dtype=bool, count=len(samples)
        )
        since = previous.generation
    return Transfers(generation, settings, rows, row_of_amp, len(samples) - 1, samples, same, since)


def _transfer_rows(
    samples: Sequence[np.ndarray], settings: DisplaySettings, n: int
) -> TransferRows:
    """``transfer`` of every sample (an empty one but the last: the unused row), vectorised:
    the same numbers as the loop, in a few kernel calls that leave the interpreter lock free."""
    m = len(samples)
    values, offsets = _pack(samples)
    sizes = np.diff(offsets)
    real = sizes > 0
    real[-1] = True
    lo = np.zeros(m)
    hi = np.ones(m)
    if settings.limits == "manual":
        lo[real], hi[real] = float(settings.manual[0]), float(settings.manual[1])
    elif settings.limits == "minmax":
        full = np.flatnonzero(sizes > 0)
        lo[full] = values[offsets[full]]
        hi[full] = values[offsets[full + 1] - 1]
    elif settings.limits == "percentile":
        p_lo, p_hi = np.true_divide(settings.percentile, 100)
        _k.percentile_rows(values, offsets, float(p_lo), float(p_hi), lo, hi)
    else:  # zscale: an iterative line fit per row, on its 1000-value subsample
        lo, hi = zscale_packed(values, offsets, settings.contrast)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    lo[bad], hi[bad] = 0.0, 1.0
    swap = hi < lo
    lo[swap], hi[swap] = hi[swap], lo[swap]
    eps = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1.0) * 1e-6
    degenerate = hi - lo <= eps
    hi[degenerate] = lo[degenerate] + eps[degenerate]
    kind = np.where(degenerate | ~real, 0, 2 if settings.stretch == "histeq" else 1)
    kind = kind.astype(np.int8)
    lo[~real], hi[~real] = 0.0, 1.0
    counts = np.zeros(m, dtype=np.int64)
    starts = np.zeros(m, dtype=np.int64)
    eq = np.flatnonzero(kind == 2)
    room = np.where(kind == 2, np.minimum(sizes, n) + 2, 0)
    np.cumsum(room[:-1], out=starts[1:])
    xs = np.empty(int(room.sum()))
    ys = np.empty(int(room.sum()))
    if eq.size:
        dt = values.dtype.type
        lo_cmp, hi_cmp = lo.astype(dt), hi.astype(dt)
        _k.equalise_rows(values, offsets, eq, lo, hi, lo_cmp, hi_cmp, n, xs, ys, starts, counts)
    return TransferRows(lo, hi, kind, settings.stretch, xs, ys, starts, counts)


def apply_transfer(data: np.ndarray, fn: Transfer) -> np.ndarray:
    """The uint8 index image of ``data`` through one transfer: 0 for NaN, else 1..255."""
    return fn.index(data)


def apply_rects(
    data: np.ndarray,
    rects: Sequence[tuple[int, int, int, int, int]],
    transfers: Transfers,
) -> np.ndarray:
    """Index image of a tile whose amps occupy ``rects`` ``(amp, r0, r1, c0, c1)`` (array
    slices of the tile). Pixels outside every rect use the fallback (global) transfer. Tiles
    of many amps (the overview) go through ``Transfers.apply_labels``."""
    if len(rects) > MANY_AMPS:
        labels = np.full(data.shape, -1, dtype=np.int32)
        boxes = _clipped_boxes(rects, 5, data.shape)
        _k.fill_labels(labels, boxes)  # not a Python loop over the amps
        return transfers.apply_labels(data, labels)
    fb = transfers.fallback
    covered = sum((r1 - r0) * (c1 - c0) for _, r0, r1, c0, c1 in rects)
    if covered < data.size:
        out = apply_transfer(data, transfers.rows[fb])
    else:
        out = np.empty(data.shape, dtype=np.uint8)
    for amp, r0, r1, c0, c1 in rects:
        out[r0:r1, c0:c1] = transfers.apply(data[r0:r1, c0:c1], amp)
    return out


def histogram(sample: np.ndarray, bins: int = 256, limits: tuple[float, float] | None = None):
    """(counts, edges) of a sample for the histogram panel (log-friendly: counts as float)."""
    v = np.asarray(sample, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(bins), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = limits if limits is not None else (float(v.min()), float(v.max()))
    if not hi > lo:
        hi = lo + 1.0
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return counts.astype(np.float64), edges


# ---------------------------------------------------------------------------------------------
# Colour maps

# Control points of the perceptually uniform maps of matplotlib (Smith, van der Walt, Firing;
# CC0), every third of their 256 entries (interpolation error below 3/255).
_MPL_HEX = {
    "viridis": (
        "440154450559460a5d470e61471365481769481b6d481f70482374482677472a7a472e7c46327e453581"
        "443983433d844240864144873f47883e4a893d4e8a3b518b3a548c38588c375b8d355e8d34618d32648e"
        "31678e306a8e2e6d8e2d708e2c728e2b758e2a788e297b8e277e8e26818e25838e24868e23898e228c8d"
        "218f8d20928c1f948c1f978b1f9a8a1e9d891fa0881fa28721a58522a88425ab8227ad812ab07f2eb37c"
        "32b67a37b8783bbb7540bd7246c06f4cc26c52c56958c7655ec96265cb5e6ccd5a73d0567ad15181d34d"
        "89d54890d74398d83ea0da39a8db34b0dd2fb8de29c0df25c8e020d0e11cd8e219dfe318e7e419efe51c"
        "f6e620fde725"
    ),
    "magma": (
        "00000401010802020d04041406051a0907200c0926100b2d130d34160f3b1a10421e1149221150271258"
        "2c115f31116536106b3b0f70400f744510774a10794f127b54137d59157e5d177f621980671b806b1d81"
        "701f817521817922827e24828326818827818c2981912b81962c809b2e7fa02f7fa5317eaa337dae347b"
        "b3367ab83779bd3977c23b75c73d73cc3f71d0416fd5446dd9466bde4968e24d66e55064e95462ec5860"
        "ef5d5ef2625df4675cf66c5cf7725cf9785dfa7d5efb835ffc8961fc8e64fd9467fd9a6afe9f6dfea571"
        "feaa74feb078feb67cfebb81fec185fec68afecc8ffed194fed799fddc9efde2a3fde7a9fcecaefcf2b4"
        "fcf7b9fcfdbf"
    ),
    "inferno": (
        "00000401010802020e04031407051b0a07220d0829110a30150b37190c3e1e0c45230c4c280b532d0b59"
        "320a5e3809623d0965420a68470b6a4c0c6b510e6c550f6d5a116e5f136e64156e69166e6d186e721a6e"
        "771c6d7c1d6d801f6c85216b8a226a8f24699326679827669d2964a22b62a62d60ab2f5eb0315bb43359"
        "b93556bd3853c13a50c63d4dca404ace4347d24644d54a41d94d3ddd513ae05536e35933e65d2fe9612b"
        "eb6628ee6a24f06f20f2741cf47918f67e14f78410f8890cf98e09fa9407fb9906fc9f07fca50afcaa0f"
        "fcb014fbb61afbbc21fac228f9c72ff8cd37f7d340f5d949f4df53f3e55df2ea69f1ef75f2f482f4f88e"
        "f8fb9afcffa4"
    ),
    "plasma": (
        "0d088716078a1d068e2406912a05932f05963504983a049a3f049c44039e4903a04e02a25302a35801a4"
        "5c01a66100a76600a76a00a86f00a87401a87801a87d03a88104a78606a68a09a58e0ca4920fa39613a1"
        "9a169f9e199da21d9aa62098aa2395ad2793b12a90b42e8db7318abb3488be3885c13b82c43e7fc7427c"
        "ca457acc4977cf4c74d24f71d5536fd7566cda5a6adc5d67de6164e16462e3685fe56b5de76f5ae97257"
        "eb7655ed7a52ef7e50f1814df3854bf48948f68d45f79143f89540f99a3efa9e3bfba238fca636fdab33"
        "fdaf31fdb42ffeb82cfebd2afdc229fdc627fdcb26fcd025fbd524fada24f8df25f7e425f5e926f3ee27"
        "f1f426f0f921"
    ),
    "cividis": (
        "00204d00225200255700275c002961002b67002d6c002f6f00306f00336f00356e0b376e15396d1d3b6d"
        "233e6c28406c2d426c31446b35466b39486b3d4a6b404d6b434f6b47516b4a536b4d556c50576c53596c"
        "565c6d595e6d5b606e5e626e61646f64666f666970696b716c6d726e6f73717174737475767676787877"
        "7b7a787e7d78817f798481798683798986798c88798f8a79928d78958f789892789b94779e9677a19976"
        "a49b76a89e75aba074aea374b1a573b4a872b7aa71baad70beaf6fc1b26dc4b56cc7b76bcbba69cebc68"
        "d1bf66d4c264d8c563dbc761deca5fe2cd5ce5d05ae9d358ecd555f0d852f3db4ff7de4cfae149fee445"
        "ffe742ffea46"
    ),
}

# SAOimage / ds9 piecewise-linear maps: per channel, (position, intensity) control points.
_SAO = {
    "heat": (
        ((0.0, 0.0), (0.34, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.65, 0.0), (0.98, 1.0), (1.0, 1.0)),
    ),
    "cool": (
        ((0.0, 0.0), (0.29, 0.0), (0.76, 0.1), (1.0, 1.0)),
        ((0.0, 0.0), (0.22, 0.0), (0.96, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.53, 1.0), (1.0, 1.0)),
    ),
    "rainbow": (
        ((0.0, 1.0), (0.2, 0.0), (0.6, 0.0), (0.8, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.2, 0.0), (0.4, 1.0), (0.8, 1.0), (1.0, 0.0)),
        ((0.0, 1.0), (0.4, 1.0), (0.6, 0.0), (1.0, 0.0)),
    ),
    "a": (
        ((0.0, 0.0), (0.25, 0.0), (0.5, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.25, 1.0), (0.5, 0.0), (0.77, 0.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.125, 0.0), (0.5, 1.0), (0.64, 0.5), (0.77, 0.0), (1.0, 0.0)),
    ),
    "b": (
        ((0.0, 0.0), (0.25, 0.0), (0.5, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.5, 0.0), (0.75, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.25, 1.0), (0.5, 0.0), (0.75, 0.0), (1.0, 1.0)),
    ),
    "bb": (
        ((0.0, 0.0), (0.5, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.25, 0.0), (0.75, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.5, 0.0), (1.0, 1.0)),
    ),
}

COLORMAPS = (
    "grey",
    "viridis",
    "magma",
    "inferno",
    "plasma",
    "cividis",
    "heat",
    "cool",
    "rainbow",
    "a",
    "b",
    "bb",
    "grey-inverted",
)


def colormap(name: str, n: int = N_COLOURS) -> np.ndarray:
    """``n`` RGB colours in [0, 1], low to high, of a named map (``COLORMAPS``)."""
    t = np.linspace(0.0, 1.0, n)
    if name == "grey":
        return np.repeat(t[:, None], 3, axis=1)
    if name == "grey-inverted":
        return np.repeat(1.0 - t[:, None], 3, axis=1)
    if name in _MPL_HEX:
        text = "".join(_MPL_HEX[name])
        rgb = np.frombuffer(bytes.fromhex(text), dtype=np.uint8).reshape(-1, 3) / 255.0
        pos = np.linspace(0.0, 1.0, 256)[::3]
        pos = np.r_[pos, 1.0] if pos[-1] < 1.0 else pos
        return np.stack([np.interp(t, pos[: len(rgb)], rgb[:, c]) for c in range(3)], axis=1)
    if name in _SAO:
        return np.stack(
            [np.interp(t, [p for p, _ in ch], [v for _, v in ch]) for ch in _SAO[name]], axis=1
        )
    raise ValueError(f"unknown colour map {name!r}; expected one of {COLORMAPS}")


def index_lut(name: str) -> np.ndarray:
    """The (256, 4) uint8 RGBA table of the index images: entry 0 transparent, 1..255 the map."""
    lut = np.zeros((N_COLOURS + 1, 4), dtype=np.uint8)
    lut[1:, :3] = np.rint(colormap(name) * 255.0).astype(np.uint8)
    lut[1:, 3] = 255
    return lut


def argb_lut(name: str) -> np.ndarray:
    """The (256,) uint32 table of premultiplied ARGB32 (Qt's fastest image format to draw)
    for index images: entry 0 fully transparent, 1..255 the map, opaque."""
    lut = index_lut(name).astype(np.uint32)
    argb = (lut[:, 3] << 24) | (lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2]
    argb[0] = 0
    return argb


def colourise(index: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Index image to premultiplied ARGB32 pixels (the colour-map stage: a table lookup).

    Indexing, not ``np.take``: with uint8 indices ``np.take`` held the interpreter lock for
    the whole call (1.5 ms a 496 x 496 tile, on the io and draw workers at every tile);
    indexing leaves it, and is faster."""
    return lut[index]


def warm_up() -> None:
    """Load the compiled kernels (numba's cache) on tiny inputs: at start-up, not on a worker
    while the first frame is drawn (loading them holds the interpreter lock)."""
    rng = np.random.default_rng(0)
    samples = [np.sort(rng.random(8).astype(np.float32)) for _ in range(MANY_PARTS + 1)]
    samples.append(np.empty(0, dtype=np.float32))
    rects = [(i, i % 4, i % 4 + 1, 0, 4) for i in range(MANY_AMPS + 1)]
    for stretch, limits in (("histeq", "minmax"), ("histeq", "percentile"), ("histeq", "zscale")):
        t = build_transfers(0, DisplaySettings(stretch=stretch, limits=limits), samples,
                            np.zeros(len(samples), dtype=np.int64))  # fmt: skip
        apply_rects(rng.random((4, 4)).astype(np.float32), rects, t)
    merge_samples([np.sort(rng.random(4 * SAMPLE_SIZE).astype(np.float32))] * (MANY_PARTS + 1))
    rect_samples(rng.random((4, 4)).astype(np.float32), [(0, 2, 0, 4), (2, 4, 1, 3)])
