"""Slow, obvious numpy versions of the kernels, written from CAMERA.md, to test them against."""

from __future__ import annotations

import warnings

import numpy as np


def robust_mean(values: np.ndarray, clip: float = 3.0) -> float:
    med = np.median(values)
    sigma = max(1.4826 * np.median(np.abs(values - med)), 1.0)
    kept = values[np.abs(values - med) <= clip * sigma]
    return float(kept.mean()) if kept.size else float(med)


def serial_overscan_rows(segments, ox0, ox1, clip=3.0):
    n, ny, _ = segments.shape
    out = np.empty((n, ny))
    for a in range(n):
        for y in range(ny):
            out[a, y] = robust_mean(segments[a, y, ox0:ox1].astype(np.float64), clip)
    return out


def assemble(segments, datasec, vendor, row_bias=None):
    """Trim, subtract rint(row bias), flip, place: the rule of CAMERA.md written out plainly."""
    x0, x1, y0, y1 = datasec
    n = segments.shape[0]
    h, w = y1 - y0, x1 - x0
    ny = h * (2 if n == 16 else 1)
    out = np.zeros((ny, 8 * w), dtype=np.int64)
    names = [f"C1{j}" for j in range(8)] + ([f"C0{j}" for j in range(7, -1, -1)] if n == 16 else [])
    for a, name in enumerate(names):
        data = segments[a, y0:y1, x0:x1].astype(np.int64)
        if row_bias is not None:
            data = data - np.rint(row_bias[a, y0:y1]).astype(np.int64)[:, None]
        j = int(name[2])
        if n == 8:  # wavefront: one row, C1j at 7 - j, flipped in x and y
            data = data[::-1, ::-1]
            out[0:h, (7 - j) * w:(8 - j) * w] = data
        elif name[1] == "1":
            out[h:2 * h, j * w:(j + 1) * w] = data[::-1, ::-1]
        else:
            out[0:h, j * w:(j + 1) * w] = data[:, ::-1] if vendor == "ITL" else data
    return out


def downsample2(src):
    ny, nx = src.shape
    pad = np.full((ny + ny % 2, nx + nx % 2), np.nan)
    pad[:ny, :nx] = src
    blocks = pad.reshape(pad.shape[0] // 2, 2, pad.shape[1] // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks give NaN, as they should
        return np.nanmean(blocks, axis=(1, 3))
