"""Numba kernels of CCD assembly: arrays and scalars in, no I/O, no validation (see assembly.py)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def place_amps(
    segments: np.ndarray,  # (n_amp, ny_raw, nx_raw)
    x0: int,
    y0: int,
    width: int,
    height: int,
    x_index: np.ndarray,  # (n_amp,) int64
    row: np.ndarray,  # (n_amp,) int64
    flip_x: np.ndarray,  # (n_amp,) bool
    flip_y: np.ndarray,  # (n_amp,) bool
    out: np.ndarray,  # (n_rows * height, n_cols * width)
) -> None:
    """Copy each amp's data region ``[y0:y0+height, x0:x0+width]``, flipped as asked, into its
    own ``height x width`` slab of ``out`` (amps never overlap, so no merge is needed)."""
    for k in range(segments.shape[0]):
        ox = x_index[k] * width
        oy = row[k] * height
        sx0 = x0 + width - 1 if flip_x[k] else x0
        sx_step = -1 if flip_x[k] else 1
        for yy in range(height):
            sy = y0 + height - 1 - yy if flip_y[k] else y0 + yy
            src = segments[k, sy]
            dst = out[oy + yy]
            for xx in range(width):
                dst[ox + xx] = src[sx0 + sx_step * xx]
