"""Instrument signature removal for display, and the per-detector pyramid.

What the store keeps (``docs`` in the README, "The exposure format"):

- ``row_bias[amp, raw_row]``: the robust mean of the serial overscan of that row (skipping the
  first columns, which carry the deferred charge, and the last ones);
- optionally ``col_bias[amp, data_col]``: the same over the parallel overscan rows;
- level 0: ``raw - rint(row_bias) - rint(col_bias)`` as int32, trimmed, assembled by the rule in
  ``core.layout`` and rotated into the focal-plane frame. This *is* the overscan-corrected value,
  and the raw ADU is recovered exactly by adding the rounded biases back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core import _isr_kernels as k
from core.assembly import ccd_shape
from core.layout import AmpPlacement, ccd_to_array


@dataclass(frozen=True)
class IsrConfig:
    """How the overscan is used. Defaults follow what camera engineers expect of a quick look."""

    serial_skip_first: int = 3  # overscan columns next to the data carry deferred charge (CTI)
    serial_skip_last: int = 2
    parallel: bool = False  # per-column parallel-overscan correction as well
    parallel_skip_first: int = 3
    clip: float = 3.0  # robust-mean clip, in robust sigmas

    def serial_columns(self, datasec: tuple[int, int, int, int], nx_raw: int) -> tuple[int, int]:
        x1 = datasec[1]
        ox0, ox1 = x1 + self.serial_skip_first, nx_raw - self.serial_skip_last
        if ox1 - ox0 < 4:
            raise ValueError(f"serial overscan too narrow: columns [{ox0}, {ox1}) of {nx_raw}")
        return ox0, ox1


def serial_overscan(segments: np.ndarray, datasec: tuple[int, int, int, int]) -> np.ndarray:
    """The serial overscan of every segment (the columns after DATASEC) as one C-ordered copy.

    The row bias, the bias level and the read noise each walk these ~60 columns of every row;
    picked out of the 576-column rows of the segments they took 2-4x as long as from the copy
    (per CCD: 16 against 11 ms, 8.6 against 4.5 and 7 against 1.7; the copy costs 2-3 ms)."""
    return np.ascontiguousarray(segments[:, :, datasec[1] :])


def overscan_bias(
    segments: np.ndarray,
    datasec: tuple[int, int, int, int],
    config: IsrConfig = IsrConfig(),
    serial: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row_bias[amp, raw_row], col_bias[amp, data_col]) as float32; col_bias is 0 unless enabled.
    ``serial``: ``serial_overscan(segments, datasec)`` if the caller has it already."""
    if segments.ndim != 3 or segments.dtype != np.int32:
        raise ValueError(
            f"segments must be int32 (amp, row, col), got {segments.dtype} {segments.shape}"
        )
    n_amp, ny_raw, nx_raw = segments.shape
    x0, x1, _, y1 = datasec
    ox0, ox1 = config.serial_columns(datasec, nx_raw)
    if serial is None:
        serial = serial_overscan(segments, datasec)
    row_bias = np.empty((n_amp, ny_raw), dtype=np.float64)
    k.serial_overscan_rows(serial, ox0 - x1, ox1 - x1, config.clip, row_bias)
    col_bias = np.zeros((n_amp, x1 - x0), dtype=np.float64)
    py0 = y1 + config.parallel_skip_first
    if config.parallel and ny_raw - py0 >= 4:
        k.parallel_overscan_cols(segments, row_bias, x0, x1, py0, ny_raw, config.clip, col_bias)
    return row_bias.astype(np.float32), col_bias.astype(np.float32)


def amp_strides(placements: Sequence[AmpPlacement], w: int, h: int, quarter_turns: int):
    """Per amp, where data pixel (u, v) lands in the C-ordered focal-plane-frame level 0:
    flat index ``base + u * step_u + v * step_v`` (flips, placement and rotation in one map)."""
    n_amp = len(placements)
    ny, nx = h * (2 if n_amp == 16 else 1), w * 8
    t = quarter_turns % 4
    width = nx if t % 2 == 0 else ny  # columns of the rotated image

    def index(x: int, y: int) -> tuple[int, int]:  # CCD (x, y) -> rotated (row, col)
        return ccd_to_array(x, y, (ny, nx), t)

    base, step_u, step_v = (np.empty(n_amp, dtype=np.int64) for _ in range(3))
    for a, p in enumerate(placements):

        def ccd(u: int, v: int, p=p) -> tuple[int, int]:
            x = p.x_index * w + (w - 1 - u if p.flip_x else u)
            y = p.row * h + (h - 1 - v if p.flip_y else v)
            return x, y

        r0, c0 = index(*ccd(0, 0))
        r1, c1 = index(*ccd(1, 0))
        r2, c2 = index(*ccd(0, 1))
        base[a] = r0 * width + c0
        step_u[a] = (r1 - r0) * width + (c1 - c0)
        step_v[a] = (r2 - r0) * width + (c2 - c0)
    return base, step_u, step_v


def assemble_to_focal_plane(
    segments: np.ndarray,
    datasec: tuple[int, int, int, int],
    placements: Sequence[AmpPlacement],
    row_bias: np.ndarray,
    col_bias: np.ndarray,
    quarter_turns: int = 0,
) -> np.ndarray:
    """Level 0: overscan-corrected int32 CCD, assembled and turned into the focal-plane frame."""
    n_amp = segments.shape[0]
    if n_amp != len(placements):
        raise ValueError(f"{n_amp} segments but {len(placements)} amp placements")
    ny, nx = ccd_shape(datasec, placements)
    shape = (ny, nx) if quarter_turns % 2 == 0 else (nx, ny)
    out = np.empty(shape, dtype=np.int32)
    x0, x1, y0, y1 = datasec
    base, step_u, step_v = amp_strides(placements, x1 - x0, y1 - y0, quarter_turns)
    k.assemble_corrected(segments, row_bias, col_bias, x0, x1, y0, y1, base, step_u, step_v, out)
    return out


def downsample(image: np.ndarray) -> np.ndarray:
    """One pyramid step: 2 x 2 area mean that ignores NaN, float32."""
    ny, nx = image.shape
    out = np.empty(((ny + 1) // 2, (nx + 1) // 2), dtype=np.float32)
    k.downsample2(image, out)
    return out


def _block_scales(shape: tuple[int, int], boxes, factors):
    """(row_block, col_scale) of ``downsample2_scaled``: the boxes' grid row of every image row
    and, per grid row, every column's factor."""
    rows = sorted({b[0] for b in boxes} | {b[1] for b in boxes})
    cols = sorted({b[2] for b in boxes} | {b[3] for b in boxes})
    ny, nx = shape
    if rows[0] != 0 or rows[-1] != ny or cols[0] != 0 or cols[-1] != nx:
        raise ValueError(
            f"boxes {rows[0]}:{rows[-1]} x {cols[0]}:{cols[-1]} do not cover {ny} x {nx}"
        )
    scale = np.full((len(rows) - 1, len(cols) - 1), np.nan)
    for (r0, r1, c0, c1), f in zip(boxes, factors):
        scale[rows.index(r0) : rows.index(r1), cols.index(c0) : cols.index(c1)] = f
    if np.isnan(scale).any():
        raise ValueError("boxes leave part of the image uncovered")
    row_block = np.searchsorted(rows, np.arange(ny), side="right") - 1
    col_block = np.searchsorted(cols, np.arange(nx), side="right") - 1
    return row_block, np.ascontiguousarray(scale[:, col_block])  # (row blocks, nx)


def downsample_scaled(image: np.ndarray, boxes, factors) -> np.ndarray:
    """One pyramid step of ``image`` with each box ``(r0, r1, c0, c1)`` (array rows and columns,
    half-open) first multiplied by its factor, float32. The boxes must tile the image as a grid
    (amplifiers do); e.g. the gain of each amp, for an image in electrons."""
    ny, nx = image.shape
    out = np.empty(((ny + 1) // 2, (nx + 1) // 2), dtype=np.float32)
    k.downsample2_scaled(image, *_block_scales(image.shape, boxes, factors), out)
    return out


def pyramid(level0: np.ndarray, min_size: int = 128) -> list[np.ndarray]:
    """Levels 1, 1/2, 1/4, ... until the longer side is at most ``min_size`` pixels."""
    levels = [level0]
    while max(levels[-1].shape) > min_size:
        levels.append(downsample(levels[-1]))
    return levels


def pyramid_and_scaled(
    level0: np.ndarray, boxes, factors, min_size: int = 128
) -> tuple[list[np.ndarray], np.ndarray]:
    """``pyramid(level0)`` and ``downsample_scaled(level0, boxes, factors)`` (the image source
    detection runs on, in electrons), the two 2 x 2 steps from level 0 in one pass over it:
    4 ms of a CCD's 17 (the same values to the bit)."""
    ny, nx = level0.shape
    if max(ny, nx) <= min_size:
        return [level0], downsample_scaled(level0, boxes, factors)
    level1 = np.empty(((ny + 1) // 2, (nx + 1) // 2), dtype=np.float32)
    scaled = np.empty_like(level1)
    k.downsample2_both(level0, *_block_scales(level0.shape, boxes, factors), level1, scaled)
    return [level0, *pyramid(level1, min_size)], scaled


def bin_onto_grid(image: np.ndarray, off_x: int, off_y: int, factor: int):
    """Sums and counts of ``image`` in ``factor``-pixel bins of a grid on which its pixel (0, 0)
    sits ``(off_x, off_y)`` pixels from a bin corner; the caller places the bins."""
    if not (0 <= off_x < factor and 0 <= off_y < factor):
        raise ValueError("offsets must lie within one bin")
    ny, nx = image.shape
    nby = (ny + off_y + factor - 1) // factor
    nbx = (nx + off_x + factor - 1) // factor
    sums = np.zeros((nby, nbx), dtype=np.float64)
    counts = np.zeros((nby, nbx), dtype=np.int64)
    k.bin_sum(image, off_x, off_y, factor, sums, counts)
    return sums, counts
