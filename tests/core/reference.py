"""Slow, obvious numpy versions of the kernels, written from CAMERA.md, to test them against."""

from __future__ import annotations

import warnings

import numpy as np


def robust_rows(block: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """Row means within clip robust sigmas of each row's median; one sigma for the block:
    1.4826 x the median absolute deviation about the row medians over every 4th row."""
    block = block.astype(np.float64)
    med = np.median(block, axis=1)
    sigma = max(1.4826 * np.median(np.abs(block[::4] - med[::4, None])), 1.0)
    out = np.empty(block.shape[0])
    for y, row in enumerate(block):
        kept = row[np.abs(row - med[y]) <= clip * sigma]
        out[y] = kept.mean() if kept.size else med[y]
    return out


def serial_overscan_rows(segments, ox0, ox1, clip=3.0):
    return np.stack([robust_rows(seg[:, ox0:ox1], clip) for seg in segments])


def parallel_overscan_cols(segments, row_bias, datasec, skip_first=3, clip=3.0):
    """Per amp and data column, the robust mean of the parallel overscan rows (after the first
    ``skip_first``), each row less its rounded serial bias: the columns as the rows of a block."""
    x0, x1, _, y1 = datasec
    out = []
    for seg, rb in zip(segments, row_bias):
        rows = seg[y1 + skip_first :, x0:x1].astype(np.float64)
        rows -= np.rint(rb[y1 + skip_first :]).astype(np.float64)[:, None]
        out.append(robust_rows(rows.T, clip))
    return np.stack(out)


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
            out[0:h, (7 - j) * w : (8 - j) * w] = data
        elif name[1] == "1":
            out[h : 2 * h, j * w : (j + 1) * w] = data[::-1, ::-1]
        else:
            out[0:h, j * w : (j + 1) * w] = data[:, ::-1] if vendor == "ITL" else data
    return out


def downsample2(src):
    ny, nx = src.shape
    pad = np.full((ny + ny % 2, nx + nx % 2), np.nan)
    pad[:ny, :nx] = src
    blocks = pad.reshape(pad.shape[0] // 2, 2, pad.shape[1] // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks give NaN, as they should
        return np.nanmean(blocks, axis=(1, 3))


def coarsen2_sum(a):
    """2 x 2 sums in the order (0, 0), (0, 1), (1, 0), (1, 1)."""
    return a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]


def bin_means(sums, counts):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
