"""Statistics of the data as shown, per amp and per pyramid level. No Qt.

A stretch must be computed from data at the resolution it is drawn at: a 16 x 16 mean has a
sixteenth of the pixel noise, so limits taken from the overview would saturate the noise of
full-resolution tiles. Each overview level gets the statistics of the whole level (read at
open); each detector level gets per-amp samples from the tiles of that level as they arrive,
and an amp's statistics at a level are frozen once it has enough pixels, so panning never
changes the stretch of what is already on screen.
"""

from __future__ import annotations

import numpy as np

from cvt.display import SAMPLE_SIZE, merge_samples, sorted_sample
from cvt.viewer.tiles import OVERVIEW, TileKey

MIN_PIXELS = 2048  # sampled pixels of an amp at a level before its statistics are frozen
TILE_SAMPLE = 1024  # at most this many pixels per amp and tile go into the sample
EMPTY = np.empty(0, dtype=np.float32)


def table_key(key: TileKey) -> tuple[str, int]:
    """Which statistics a tile is stretched with: its overview level, or its detector level."""
    return ("ov" if key.source == OVERVIEW else "det", key.level)


def tile_samples(data: np.ndarray, rects) -> dict[int, np.ndarray]:
    """Per-amp sorted samples of a tile (a strided subset of each amp's pixels)."""
    out = {}
    for amp, r0, r1, c0, c1 in rects:
        n = (r1 - r0) * (c1 - c0)
        if n < 16:
            continue
        step = max(1, int(np.sqrt(n / TILE_SAMPLE)))
        s = sorted_sample(data[r0:r1:step, c0:c1:step], TILE_SAMPLE)
        if s.size:
            out[amp] = s
    return out


class LevelSamples:
    """Per-amp samples of one (domain, level), accumulated until frozen."""

    def __init__(self, n_amps: int):
        self.samples: list[np.ndarray] = [EMPTY] * n_amps
        self.counts = np.zeros(n_amps, dtype=np.int64)
        self.frozen = np.zeros(n_amps, dtype=bool)
        self.version = 0

    @classmethod
    def complete(cls, samples: list[np.ndarray]) -> LevelSamples:
        """Samples of a whole level (the overview): every amp frozen."""
        out = cls(len(samples))
        out.samples = list(samples)
        out.counts[:] = [s.size for s in samples]
        out.frozen[:] = True
        out.version = 1
        return out

    def add(self, amp: int, sample: np.ndarray) -> bool:
        """Merge a tile's sample of an amp; True if the statistics changed."""
        if self.frozen[amp] or sample.size == 0:
            return False
        self.samples[amp] = merge_samples([self.samples[amp], sample], SAMPLE_SIZE)
        self.counts[amp] += sample.size
        if self.counts[amp] >= MIN_PIXELS:
            self.frozen[amp] = True
        self.version += 1
        return True

    @property
    def empty(self) -> bool:
        return not self.counts.any()

    def snapshot(self) -> list[np.ndarray]:
        return list(self.samples)


def table_for(key: TileKey, tables: dict):
    """The transfers a tile is drawn with: those of its own level if known; a detector level
    not seen yet borrows the finest overview's, an overview level the nearest level's."""
    dom, level = table_key(key)
    t = tables.get((dom, level))
    if t is not None:
        return t
    ov_levels = sorted(lv for d, lv in tables if d == "ov")
    if not ov_levels:
        return None
    if dom == "det":
        return tables[("ov", ov_levels[0])]
    return tables[("ov", min(ov_levels, key=lambda lv: abs(lv - level)))]
