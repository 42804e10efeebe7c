"""Where the tiles are and which ones a view needs: the viewer's geometry, with no Qt.

Everything here is in focal-plane pixels (x right, y up; ``core.camera``). A *source* is a
pyramid placed in the focal plane: the overview (level 0 at 1/16) or one detector (level 0 at
full resolution); level ``l`` of a source with base scale ``b`` has pixels ``b * 2**l`` focal-plane
pixels wide, and its pixel ``(row, col)`` covers ``origin + s * (col, row)`` to ``+ s`` (array row
0 at the bottom, as stored). Tiles are the stores' 512 x 512 chunks, so a tile is one read.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from core import layout
from core.exposure import ExposureError

OVERVIEW = "overview"
Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in focal-plane pixels


@dataclass(frozen=True, order=True)
class TileKey:
    source: str  # OVERVIEW or a detector name
    level: int
    ty: int
    tx: int


@dataclass(frozen=True)
class Source:
    """A pyramid in the focal plane (the overview or one detector)."""

    name: str
    index: int  # detector index in the layout, -1 for the overview
    origin: tuple[float, float]
    base: float
    level_shapes: tuple[tuple[int, int], ...]
    chunks: tuple[tuple[int, int], ...]

    @property
    def n_levels(self) -> int:
        return len(self.level_shapes)

    def scale(self, level: int) -> float:
        return self.base * 2.0**level

    def bounds(self, level: int = 0) -> Rect:
        ny, nx = self.level_shapes[level]
        s = self.scale(level)
        return (self.origin[0], self.origin[1], self.origin[0] + nx * s, self.origin[1] + ny * s)

    def grid(self, level: int) -> tuple[int, int]:
        (ny, nx), (cy, cx) = self.level_shapes[level], self.chunks[level]
        return math.ceil(ny / cy), math.ceil(nx / cx)

    def tile_slices(self, level: int, ty: int, tx: int) -> tuple[int, int, int, int]:
        (ny, nx), (cy, cx) = self.level_shapes[level], self.chunks[level]
        return ty * cy, min((ty + 1) * cy, ny), tx * cx, min((tx + 1) * cx, nx)

    def tile_rect(self, level: int, ty: int, tx: int) -> Rect:
        r0, r1, c0, c1 = self.tile_slices(level, ty, tx)
        s = self.scale(level)
        ox, oy = self.origin
        return (ox + c0 * s, oy + r0 * s, ox + c1 * s, oy + r1 * s)

    def keys(self, level: int) -> list[TileKey]:
        nty, ntx = self.grid(level)
        return [TileKey(self.name, level, ty, tx) for ty in range(nty) for tx in range(ntx)]

    def tiles_in(self, level: int, rect: Rect) -> list[TileKey]:
        """Keys of the level's tiles that intersect ``rect``."""
        x0, y0, x1, y1 = rect
        bx0, by0, bx1, by1 = self.bounds(level)
        if x1 <= bx0 or x0 >= bx1 or y1 <= by0 or y0 >= by1:
            return []
        s = self.scale(level)
        cy, cx = self.chunks[level]
        nty, ntx = self.grid(level)
        tx0 = max(0, int((x0 - bx0) // (s * cx)))
        tx1 = min(ntx - 1, int((x1 - bx0) // (s * cx)))
        ty0 = max(0, int((y0 - by0) // (s * cy)))
        ty1 = min(nty - 1, int((y1 - by0) // (s * cy)))
        return [
            TileKey(self.name, level, ty, tx)
            for ty in range(ty0, ty1 + 1)
            for tx in range(tx0, tx1 + 1)
        ]

    def level_for(self, px: float) -> int:
        """The coarsest level that still has at least one data pixel per screen pixel of
        ``px`` focal-plane pixels (level 0 when zoomed in past the data's own pixels)."""
        if px <= self.base:
            return 0
        return min(self.n_levels - 1, int(math.floor(math.log2(px / self.base) + 1e-9)))


def pixel_edges(a, origin: float, s: float):
    """Index of the first pixel (width ``s`` from ``origin``) whose centre is at or beyond each
    focal-plane coordinate ``a`` (scalars or arrays; floats)."""
    return np.ceil((np.asarray(a, dtype=np.float64) - origin) / s - 0.5)


@dataclass
class DetectorInfo:
    """What the viewer needs of one stored detector (no I/O: consolidated metadata)."""

    name: str
    index: int
    origin: tuple[float, float]
    quarter_turns: int
    ccd_shape: tuple[int, int]
    level_shapes: list[tuple[int, int]]
    chunks: list[tuple[int, int]]
    amps: list[dict]
    amp_start: int  # index of its first amp in the layout's amp table

    @property
    def bounds(self) -> Rect:
        ny, nx = self.level_shapes[0]
        return (self.origin[0], self.origin[1], self.origin[0] + nx, self.origin[1] + ny)

    def ccd_to_array(self, x, y):
        return layout.ccd_to_array(x, y, self.ccd_shape, self.quarter_turns)

    def array_to_ccd(self, row, col):
        return layout.array_to_ccd(row, col, self.ccd_shape, self.quarter_turns)

    def amp_box_fp(self, a: dict) -> Rect:
        """The amp's pixel edges in the focal plane."""
        r0, r1, c0, c1 = layout.amp_array_box(a, self.ccd_shape, self.quarter_turns)
        ox, oy = self.origin
        return (ox + c0, oy + r0, ox + c1, oy + r1)


@dataclass
class Location:
    """What is under a focal-plane point."""

    fx: float
    fy: float
    detector: str | None = None
    amp: str | None = None
    amp_index: int = -1  # in the layout's amp table
    row: int = -1  # level-0 array row and column
    col: int = -1
    ccd_x: int = -1
    ccd_y: int = -1
    amp_u: int = -1
    amp_v: int = -1
    absent: bool = False  # a detector of the camera that is not in this exposure
    unreadable: str | None = None  # why a detector of the exposure cannot be read (then absent)


@dataclass
class Layout:
    """The focal plane of one exposure: the overview, the stored detectors and their amps, the
    camera's detectors that are absent from it, and those it lists but cannot read."""

    overview: Source | None
    sources: dict[str, Source]
    detectors: list[DetectorInfo]
    absent: list[tuple[str, Rect]] = field(default_factory=list)
    rafts: list[tuple[str, Rect]] = field(default_factory=list)
    camera_bounds: Rect | None = None
    unreadable: list[tuple[str, Rect]] = field(default_factory=list)  # drawn apart from absent
    problems: dict[str, str] = field(default_factory=dict)  # what cannot be read -> why

    def __post_init__(self) -> None:
        self.by_name = {d.name: d for d in self.detectors}
        self.det_bounds = np.array([d.bounds for d in self.detectors], dtype=np.float64).reshape(
            -1, 4
        )
        amps, det, names = [], [], []
        for d in self.detectors:
            for a in d.amps:
                amps.append(d.amp_box_fp(a))
                det.append(d.index)
                names.append(a["name"])
        self.amp_boxes = np.array(amps, dtype=np.float64).reshape(-1, 4)
        self.amp_det = np.array(det, dtype=np.int64)
        self.amp_names = names
        self._rects: OrderedDict[TileKey, list] = OrderedDict()
        self._lock = threading.Lock()

    # --- extent

    @property
    def bounds(self) -> Rect:
        """The box around every detector, stored or absent (the camera's focal plane)."""
        boxes = [d.bounds for d in self.detectors] + [r for _, r in self.absent + self.unreadable]
        if not boxes and self.overview is not None:
            boxes = [self.overview.bounds(0)]
        if not boxes:
            return (0.0, 0.0, 1.0, 1.0)
        b = np.array(boxes)
        return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())

    def amp_label(self, i: int) -> str:
        return f"{self.detectors[self.amp_det[i]].name}_{self.amp_names[i]}"

    def amp_index(self, detector: str, amp: str) -> int:
        d = self.by_name[detector]
        for k, a in enumerate(d.amps):
            if a["name"] == amp:
                return d.amp_start + k
        raise KeyError(f"{detector} has no amp {amp}")

    # --- which tiles a view needs

    def overview_level_for(self, px: float) -> int | None:
        return None if self.overview is None else self.overview.level_for(px)

    def wants_detector_tiles(self, px: float) -> bool:
        """Detector tiles add detail only where the finest overview pixel is coarser than a
        screen pixel."""
        return self.overview is None or px < self.overview.base

    def wanted(self, view: Rect, px: float, max_tiles: int = 400) -> list[TileKey]:
        """Detector tiles for a view, in request order: coarse first, then centre-out."""
        if not self.wants_detector_tiles(px) or not self.detectors:
            return []
        x0, y0, x1, y1 = view
        b = self.det_bounds
        hit = np.flatnonzero((b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0))
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        scored = []
        for i in hit:
            src = self.sources[self.detectors[i].name]
            level = src.level_for(px)
            for key in src.tiles_in(level, view):
                tx0, ty0, tx1, ty1 = src.tile_rect(key.level, key.ty, key.tx)
                d2 = (0.5 * (tx0 + tx1) - cx) ** 2 + (0.5 * (ty0 + ty1) - cy) ** 2
                scored.append((-key.level, d2, key))
        scored.sort(key=lambda t: (t[0], t[1]))
        return [k for _, _, k in scored[:max_tiles]]

    # --- amps in a tile (for per-amp stretches)

    def rects(self, key: TileKey) -> list[tuple[int, int, int, int, int]]:
        """``(amp, r0, r1, c0, c1)``: the amps' pixels within the tile's array (cached)."""
        with self._lock:
            got = self._rects.get(key)
            if got is not None:
                self._rects.move_to_end(key)
                return got
        src = self.overview if key.source == OVERVIEW else self.sources[key.source]
        r0, r1, c0, c1 = src.tile_slices(key.level, key.ty, key.tx)
        out = self._rects_in(src, key.level, (r0, r1, c0, c1))
        with self._lock:
            self._rects[key] = out
            while len(self._rects) > 4096:
                self._rects.popitem(last=False)
        return out

    def _rects_in(self, src: Source, level: int, window: tuple[int, int, int, int]):
        return [tuple(row) for row in self._rect_table(src, level, window).tolist()]

    def _rect_table(self, src: Source, level: int, window: tuple[int, int, int, int]) -> np.ndarray:
        """``_rects_in`` as an ``(n, 5)`` int64 array."""
        r0, r1, c0, c1 = window
        s = src.scale(level)
        ox, oy = src.origin
        x0, y0, x1, y1 = ox + c0 * s, oy + r0 * s, ox + c1 * s, oy + r1 * s
        b = self.amp_boxes
        if src.index >= 0:
            d = self.detectors[src.index]
            candidates = np.arange(d.amp_start, d.amp_start + len(d.amps))
        else:
            candidates = np.flatnonzero(
                (b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0)
            )
        # every candidate's sides at once: a Python loop over the 3,216 amps of an overview
        # level held the interpreter lock in the workers for each of its tiles
        box = b[candidates]
        cols = pixel_edges(box[:, 0::2], ox, s)
        rows = pixel_edges(box[:, 1::2], oy, s)
        cc0, cc1 = np.maximum(cols[:, 0], c0), np.minimum(cols[:, 1], c1)
        rr0, rr1 = np.maximum(rows[:, 0], r0), np.minimum(rows[:, 1], r1)
        keep = (cc1 > cc0) & (rr1 > rr0)
        return np.stack(
            [candidates[keep], rr0[keep] - r0, rr1[keep] - r0, cc0[keep] - c0, cc1[keep] - c0],
            axis=1,
        ).astype(np.int64)

    def amp_samples(self, level_image: np.ndarray, level: int, size: int) -> list[np.ndarray]:
        """Per-amp sorted samples from a whole overview level (the statistics of every
        stretch): ``sorted_sample`` of each amp's pixels, in kernels (``rect_samples``)."""
        from cvt.display import rect_samples

        ny, nx = level_image.shape
        rects = self._rect_table(self.overview, level, (0, ny, 0, nx))
        out = [np.empty(0, dtype=np.float32) for _ in range(len(self.amp_names))]
        for i, sample in zip(rects[:, 0].tolist(), rect_samples(level_image, rects[:, 1:], size)):
            out[i] = sample
        return out

    # --- what is where

    def locate(self, fx: float, fy: float) -> Location:
        loc = Location(fx, fy)
        b = self.det_bounds
        hit = np.flatnonzero((b[:, 0] <= fx) & (b[:, 2] > fx) & (b[:, 1] <= fy) & (b[:, 3] > fy))
        if hit.size == 0:
            for name, (x0, y0, x1, y1) in self.absent + self.unreadable:
                if x0 <= fx < x1 and y0 <= fy < y1:
                    loc.detector, loc.absent = name, True
                    loc.unreadable = self.problems.get(name)
            return loc
        d = self.detectors[int(hit[0])]
        row, col = int(math.floor(fy - d.origin[1])), int(math.floor(fx - d.origin[0]))
        x, y = d.array_to_ccd(row, col)
        loc.detector, loc.row, loc.col, loc.ccd_x, loc.ccd_y = d.name, row, col, int(x), int(y)
        for k, a in enumerate(d.amps):
            if a["x0"] <= x < a["x0"] + a["nx"] and a["y0"] <= y < a["y0"] + a["ny"]:
                u, v = x - a["x0"], y - a["y0"]
                loc.amp, loc.amp_index = a["name"], d.amp_start + k
                loc.amp_u = int(a["nx"] - 1 - u if a["flip_x"] else u)
                loc.amp_v = int(a["ny"] - 1 - v if a["flip_y"] else v)
                break
        return loc

    def find(self, text: str) -> tuple[str, Rect, int] | None:
        """``R22_S11`` or ``R22_S11_C07`` (any case, ``_`` or ``/`` or space): (canonical name,
        its focal-plane box, amp index or -1); None if there is no such thing."""
        m = re.fullmatch(
            r"(R(?:\d\d|XX))[_/ ]?(S(?:[GW]\d|\d\d))(?:[_/ ]?(C\d\d))?", text.strip().upper()
        )
        if not m:
            return None
        det = f"{m.group(1).upper()}_{m.group(2).upper()}"
        amp = m.group(3).upper() if m.group(3) else None
        if det in self.by_name:
            d = self.by_name[det]
            if amp is None:
                return det, d.bounds, -1
            try:
                i = self.amp_index(det, amp)
            except KeyError:
                return None
            return f"{det}_{amp}", tuple(self.amp_boxes[i]), i
        for name, rect in self.absent + self.unreadable:
            if name == det and amp is None:
                return det, rect, -1
        return None


def detector_info(det, index: int, amp_start: int) -> DetectorInfo:
    """The viewer's view of a ``core.exposure.DetectorImage`` (metadata only)."""
    # the store's chunking (``core.exposure.LEVEL_CHUNK``, no larger than the level): opening
    # 1230 arrays of a full exposure just to ask would cost 0.6 s before the first frame
    from core.exposure import LEVEL_CHUNK

    chunks = [(min(LEVEL_CHUNK, ny), min(LEVEL_CHUNK, nx)) for ny, nx in det.level_shapes]
    return DetectorInfo(
        name=det.name,
        index=index,
        origin=(float(det.origin[0]), float(det.origin[1])),
        quarter_turns=int(det.quarter_turns),
        ccd_shape=tuple(det.ccd_shape),
        level_shapes=[tuple(s) for s in det.level_shapes],
        chunks=chunks,
        amps=list(det.amps),
        amp_start=amp_start,
    )


def build_layout(exposure, camera=None) -> tuple[Layout, dict]:
    """The layout of an opened ``core.exposure.Exposure`` and its ``DetectorImage`` objects by
    name. Metadata only (consolidated), but call it off the GUI thread all the same."""
    infos, images = [], {}
    problems: dict[str, str] = {}
    amp_start = 0
    for name in exposure.detector_names:
        try:
            det = exposure.detector(name)
        except Exception as exc:  # listed but unreadable: said, and the rest still opens
            problems[name] = f"metadata unreadable ({describe_error(exc)})"
            continue
        info = detector_info(det, len(infos), amp_start)
        amp_start += len(info.amps)
        infos.append(info)
        images[name] = det
    sources = {
        d.name: Source(d.name, d.index, d.origin, 1.0, tuple(d.level_shapes), tuple(d.chunks))
        for d in infos
    }
    overview = None
    try:
        oa = exposure.overview_attrs
        shapes, chunks = [], []
        for i, _ in enumerate(oa["factors"]):
            arr = exposure.overview_level(i)
            shapes.append(tuple(int(s) for s in arr.shape))
            chunks.append((int(arr.chunks[0]), int(arr.chunks[1])))
        overview = Source(
            OVERVIEW,
            -1,
            (float(oa["origin"][0]), float(oa["origin"][1])),
            float(oa["factors"][0]),
            tuple(shapes),
            tuple(chunks),
        )
    except Exception as exc:  # no overview (or a broken one): the detectors alone
        overview = None
        problems["overview"] = f"unreadable ({describe_error(exc)}); the detectors are drawn alone"
    absent, unreadable, rafts, cam_bounds = [], [], [], None
    if camera is not None:
        present = {d.name for d in infos}
        raft_boxes: dict[str, list[Rect]] = {}
        for det in camera.detectors:
            raft_boxes.setdefault(det.raft, []).append(det.fp_bounds)
            if det.name in problems:
                unreadable.append((det.name, det.fp_bounds))
            elif det.name not in present:
                absent.append((det.name, det.fp_bounds))
        for raft, boxes in raft_boxes.items():
            b = np.array(boxes)
            rafts.append((raft, (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())))
        cam_bounds = camera.fp_bounds
    layout = Layout(overview, sources, infos, absent, rafts, cam_bounds, unreadable, problems)
    return layout, images


def describe_error(exc: BaseException) -> str:
    """What went wrong, for the status bar and the summary: an ``ExposureError``'s own message
    (it names the file and the problem), else the exception's type and message."""
    return str(exc) if isinstance(exc, ExposureError) else f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------
# The tile cache


@dataclass
class Tile:
    """A loaded tile: the data (float32, as stored), its index image under the transfers of
    generation ``generation`` (-1: not stretched yet) and that index through colour map
    version ``colour``. ``absent`` says why there is no data."""

    key: TileKey
    data: np.ndarray | None
    index: np.ndarray | None = None
    generation: int = -1
    absent: str | None = None
    samples: dict | None = None  # per-amp sorted samples (cvt.viewer.stats)
    argb: np.ndarray | None = None  # the index image through colour map ``colour``
    colour: int = -1
    corrupt: bool = False  # a read error that reading again would repeat: the stored bytes

    @property
    def nbytes(self) -> int:
        n = 256
        if self.samples:
            n += sum(s.nbytes for s in self.samples.values())
        if self.data is not None:
            n += self.data.nbytes
        if self.index is not None:
            n += self.index.nbytes
        if self.argb is not None:
            n += self.argb.nbytes
        return n


class TileCache:
    """Least recently used tiles within a bytes budget. Thread-safe."""

    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self._items: OrderedDict[TileKey, Tile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: TileKey) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: TileKey) -> Tile | None:
        with self._lock:
            tile = self._items.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, tile: Tile) -> None:
        with self._lock:
            old = self._items.pop(tile.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[tile.key] = tile
            self._bytes += tile.nbytes
            self._evict()

    def resized(self, tile: Tile, old_nbytes: int) -> None:
        """A cached tile's size changed (its index image was replaced)."""
        with self._lock:
            if self._items.get(tile.key) is tile:
                self._bytes += tile.nbytes - old_nbytes
                self._evict()

    def _evict(self) -> None:
        while self._bytes > self.budget and len(self._items) > 1:
            _, t = self._items.popitem(last=False)
            self._bytes -= t.nbytes
            self.evictions += 1

    def set_budget(self, budget_bytes: int) -> None:
        with self._lock:
            self.budget = int(budget_bytes)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def values(self) -> Iterable[Tile]:
        with self._lock:
            return list(self._items.values())
