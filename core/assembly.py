"""Assembling a raw CCD's amps into one trimmed CCD image, by the rule in ``core.layout``.

Array row 0 is the bottom of the CCD (the Rubin pipelines' convention, and what astropy gives
for the first FITS row), so an assembled image compares directly with a cameraGeom image.
DETSEC is never used (see ``core.layout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from core._isr_kernels import assemble_corrected
from core.layout import AmpPlacement

__all__ = ["AmpBox", "amp_boxes", "assemble_ccd", "ccd_shape"]


class AmpBox(NamedTuple):
    """One amp's data region in the assembled CCD (pixels, row 0 at the bottom)."""

    x0: int
    y0: int
    nx: int
    ny: int


def _check_datasec(datasec: Sequence[int]) -> tuple[int, int, int, int]:
    x0, x1, y0, y1 = (int(v) for v in datasec)
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise ValueError(f"datasec must be (x0, x1, y0, y1) zero-based half-open, got {datasec}")
    return x0, x1, y0, y1


def ccd_shape(datasec: Sequence[int], placements: Sequence[AmpPlacement]) -> tuple[int, int]:
    """(ny, nx) of the assembled CCD: 4000 x 4072 ITL, 4004 x 4096 E2V, 2000 x 4072 wavefront."""
    x0, x1, y0, y1 = _check_datasec(datasec)
    if not placements:
        raise ValueError("no amp placements")
    n_cols = max(p.x_index for p in placements) + 1
    n_rows = max(p.row for p in placements) + 1
    return (n_rows * (y1 - y0), n_cols * (x1 - x0))


def amp_boxes(datasec: Sequence[int], placements: Sequence[AmpPlacement]) -> tuple[AmpBox, ...]:
    """Each amp's (x0, y0, nx, ny) in the assembled CCD, in the order of ``placements``."""
    x0, x1, y0, y1 = _check_datasec(datasec)
    w, h = x1 - x0, y1 - y0
    return tuple(AmpBox(p.x_index * w, p.row * h, w, h) for p in placements)


def assemble_ccd(
    segments: np.ndarray,
    datasec: Sequence[int],
    placements: Sequence[AmpPlacement],
    *,
    dtype: np.dtype | type | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The trimmed CCD: each segment's DATASEC flipped and placed as ``placements`` say.

    ``segments`` is (n_amp, ny_raw, nx_raw) in the order of ``placements`` (as ``RawCCD`` holds
    them). The result has the segments' dtype unless ``dtype`` (e.g. float32) or ``out`` is
    given; ``out`` lets the ingest assemble straight into a larger buffer.
    """
    segments = np.asarray(segments)
    if segments.ndim != 3:
        raise ValueError(f"segments must be (n_amp, ny, nx), got shape {segments.shape}")
    if len(placements) != segments.shape[0]:
        raise ValueError(f"{segments.shape[0]} segments but {len(placements)} placements")
    x0, x1, y0, y1 = _check_datasec(datasec)
    if x1 > segments.shape[2] or y1 > segments.shape[1]:
        raise ValueError(f"datasec {datasec} exceeds segments of shape {segments.shape[1:]}")
    shape = ccd_shape(datasec, placements)
    cells = {(p.x_index, p.row) for p in placements}
    if len(cells) != len(placements):
        raise ValueError("two amps placed in the same cell")
    if out is None:
        out = np.empty(shape, dtype=segments.dtype if dtype is None else dtype)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the CCD is {shape}")
    from core.isr import amp_strides  # core.isr builds on this module

    n_amp = segments.shape[0]
    zeros_row = np.zeros((n_amp, segments.shape[1]), dtype=np.float32)
    zeros_col = np.zeros((n_amp, x1 - x0), dtype=np.float32)
    base, step_u, step_v = amp_strides(placements, x1 - x0, y1 - y0, 0)
    assemble_corrected(
        np.ascontiguousarray(segments),
        zeros_row,
        zeros_col,
        x0,
        x1,
        y0,
        y1,
        base,
        step_u,
        step_v,
        out,
    )
    return out
