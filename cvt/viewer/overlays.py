"""Overlays, as a few scene items each drawing many things (not thousands of items).

- ``OutlineLayer``: boxes (rafts, CCDs, amps) as one cosmetic-pen path, built once.
- ``LabelLayer``: text at focal-plane points, a fixed screen size, each label shown only when
  the box it names is wide enough on screen (rafts far out, CCDs closer, amps close up).
- ``RectLayer``: filled and/or outlined boxes, one colour each (the per-amp heat map, health
  marks, absent detectors), painted in one pass grouped by colour.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QLineF, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QPainter,
    QPainterPath,
    QPen,
    QStaticText,
    QTransform,
)
from PySide6.QtWidgets import QGraphicsItem, QGraphicsObject

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)
from cvt.viewer.tiles import Rect

MAX_LABELS = 300  # labels drawn in one paint at most
MANY_BOXES = 500


def _qrect(r: Rect) -> QRectF:
    return QRectF(r[0], r[1], r[2] - r[0], r[3] - r[1])


@dataclass(frozen=True)
class OutlineGeometry:
    """What an ``OutlineLayer`` strokes: a few hundred boxes as their edges' lines; more (amps)
    as a few paths, one per cell of a coarse grid over them, made from numpy
    (``pg.arrayToQPath``: no Python per box). Value types only, so a worker thread builds it
    while an exposure opens (for LSSTCam's 3216 amps ~10 ms that the GUI thread spent at once)."""

    boxes: np.ndarray
    box_size: float
    bounds: QRectF
    cells: list[tuple[QRectF, QPainterPath]]
    lines: list[QLineF]


CELLS = 4  # the grid of paths is CELLS x CELLS (for more than MANY_BOXES boxes; else lines)


def outline_geometry(boxes: Sequence[Rect] | np.ndarray) -> OutlineGeometry:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cells, lines = [], []
    if 0 < len(b) <= MANY_BOXES:
        # a few hundred boxes: their edges as lines (a raster paint engine strokes them in
        # 1-2 ms; the same boxes as a path took up to 17 ms at the whole-plane zoom)
        x0, y0, x1, y1 = b.T
        edges = np.stack(
            [np.c_[x0, y0, x1, y0], np.c_[x1, y0, x1, y1], np.c_[x1, y1, x0, y1],
             np.c_[x0, y1, x0, y0]], axis=1,
        ).reshape(-1, 4)  # fmt: skip
        lines = [QLineF(*e) for e in edges.tolist()]
    elif len(b):
        cx, cy = 0.5 * (b[:, 0] + b[:, 2]), 0.5 * (b[:, 1] + b[:, 3])
        edges = [np.linspace(c.min(), c.max(), CELLS + 1)[1:-1] for c in (cx, cy)]
        cell = np.searchsorted(edges[0], cx) * CELLS + np.searchsorted(edges[1], cy)
        for c in np.unique(cell):
            part = b[cell == c]
            cells.append((_union(part), _boxes_path(part)))
    size = float(np.median(b[:, 2] - b[:, 0])) if len(b) else 0.0
    return OutlineGeometry(b, size, _union(b), cells, lines)


class OutlineLayer(QGraphicsObject):
    """Box outlines with a pen of constant screen width; only the boxes in the exposed area
    are drawn, and none when they are smaller on screen than ``min_screen_px``.

    Built once (``OutlineGeometry``); a paint strokes the paths in the exposed area only."""

    def __init__(self, colour: QColor, width: float = 1.0, min_screen_px: float = 0.0):
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.pen = QPen(colour)
        self.pen.setCosmetic(True)
        self.pen.setWidthF(width)
        self.min_screen_px = min_screen_px
        self.outline = outline_geometry([])

    def set_geometry(self, geometry: OutlineGeometry) -> None:
        """Show outlines prepared by ``outline_geometry`` (on any thread)."""
        self.prepareGeometryChange()
        self.outline = geometry
        self.update()

    def boundingRect(self) -> QRectF:
        return self.outline.bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        g = self.outline
        scale = abs(painter.worldTransform().m11())
        if self.min_screen_px and scale * g.box_size < self.min_screen_px:
            return
        if g.lines:
            painter.setPen(self.pen)
            painter.drawLines(g.lines)
        if g.cells:
            # paths built once: no Python per box in a frame (building thousands of QRectF
            # per paint held the GUI thread, and the interpreter lock, 5-20 ms)
            painter.setPen(self.pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            area = option.exposedRect
            for bounds, path in g.cells:
                if bounds.intersects(area):
                    painter.drawPath(path)


def _boxes_path(b: np.ndarray) -> QPainterPath:
    """Closed outlines of boxes ``(x0, y0, x1, y1)`` as one path, from arrays."""
    x = b[:, [0, 2, 2, 0, 0]].ravel()
    y = b[:, [1, 1, 3, 3, 1]].ravel()
    connect = np.ones((len(b), 5), dtype=np.int32)
    connect[:, -1] = 0  # no line from one box to the next
    return pg.arrayToQPath(x, y, connect=connect.ravel())


def _union(b: np.ndarray) -> QRectF:
    if not len(b):
        return QRectF()
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    m = 0.01 * max(x1 - x0, y1 - y0)
    return QRectF(x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m)


class LabelLayer(QGraphicsObject):
    """Labels centred in boxes, drawn in screen pixels, only when the box is wide enough on
    screen (each label has its own threshold: rafts far out, CCDs closer, amps close up).

    A paint costs little whatever the zoom: each distinct text is laid out once
    (``QStaticText``), the screen positions are one numpy expression, and at most
    ``max_labels`` are drawn, the largest boxes first (a label per amp of a whole raft row
    cannot be read anyway)."""

    def __init__(
        self,
        colour: QColor = QColor(255, 255, 255, 210),
        point_size: int = 9,
        max_labels: int = MAX_LABELS,
    ):
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.colour = colour
        self.font = QFont()
        self.font.setPointSize(point_size)
        self.max_labels = max_labels
        self._texts: list[str] = []
        self._colours: list[QColor | None] = []
        self._static: dict[str, tuple[QStaticText, float, float]] = {}
        self._boxes = np.empty((0, 4))
        self._min_px = np.empty(0)
        self._bounds = QRectF()
        self.drawn = 0  # labels drawn by the last paint (the tests read it)

    def set_labels(self, labels: Sequence[tuple], min_screen_px: float = 60.0) -> None:
        """``(text, box)`` or ``(text, box, colour)``; shown when the box's width on screen is
        at least ``min_screen_px``."""
        self._texts, self._colours, self._static = [], [], {}
        self._boxes, self._min_px = np.empty((0, 4)), np.empty(0)
        self.add_labels(labels, min_screen_px)

    def add_labels(
        self,
        labels: Sequence[tuple],
        min_screen_px: float,
        boxes: np.ndarray | None = None,
    ) -> None:
        """As ``set_labels``, more of them; or texts alone in ``labels`` and their boxes as an
        array in ``boxes``."""
        self.prepareGeometryChange()
        if boxes is not None:
            self._texts += list(labels)
            self._colours += [None] * len(labels)
        else:
            self._texts += [lb[0] for lb in labels]
            self._colours += [lb[2] if len(lb) > 2 else None for lb in labels]
            boxes = np.array([lb[1] for lb in labels], dtype=np.float64)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self._boxes = np.vstack([self._boxes, boxes])
        self._min_px = np.r_[self._min_px, np.full(len(boxes), float(min_screen_px))]
        self._widths = self._boxes[:, 2] - self._boxes[:, 0]
        self._bounds = _union(self._boxes)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._bounds

    def visible(self, scale: float, area: QRectF) -> np.ndarray:
        """Indices of the labels to draw at ``scale`` (screen pixels per unit) in ``area``."""
        b = self._boxes
        if not len(b):
            return np.empty(0, dtype=np.int64)
        sel = np.flatnonzero(
            (self._widths * scale >= self._min_px)
            & (b[:, 0] < area.right())
            & (b[:, 2] > area.left())
            & (b[:, 1] < area.bottom())
            & (b[:, 3] > area.top())
        )
        if sel.size > self.max_labels:  # the largest boxes (rafts, then CCDs, then amps)
            sel = sel[np.argsort(-self._widths[sel], kind="stable")[: self.max_labels]]
        return sel

    def _text(self, i: int) -> tuple[QStaticText, float, float]:
        """Label ``i`` laid out (once per distinct text: 16 amp names serve 3,217 amps; laying
        out 300 labels took 17 ms of a paint)."""
        text = self._texts[i]
        got = self._static.get(text)
        if got is None:
            st = QStaticText(text)
            st.setTextFormat(Qt.TextFormat.PlainText)
            st.prepare(QTransform(), self.font)
            size = st.size()
            got = self._static[text] = (st, 0.5 * size.width(), 0.5 * size.height())
        return got

    def paint(self, painter: QPainter, option, widget=None) -> None:
        t = painter.worldTransform()
        sel = self.visible(abs(t.m11()), option.exposedRect)
        self.drawn = int(sel.size)
        if not sel.size:
            return
        b = self._boxes
        cx = 0.5 * (b[sel, 0] + b[sel, 2])
        cy = 0.5 * (b[sel, 1] + b[sel, 3])
        px = t.m11() * cx + t.m21() * cy + t.dx()
        py = t.m12() * cx + t.m22() * cy + t.dy()
        painter.save()
        painter.resetTransform()
        painter.setFont(self.font)
        current = None
        for i, x, y in zip(sel.tolist(), px.tolist(), py.tolist()):
            colour = self._colours[i] or self.colour
            if colour is not current:
                painter.setPen(colour)
                current = colour
            st, hw, hh = self._text(i)
            painter.drawStaticText(QPointF(x - hw, y - hh), st)
        painter.restore()


class RectLayer(QGraphicsObject):
    """Boxes with a fill and/or an outline colour each, painted grouped by colour."""

    def __init__(self, opacity: float = 1.0, outline_width: float = 2.0):
        super().__init__()
        self.setOpacity(opacity)
        self.outline_width = outline_width
        self._fills: dict[tuple, list[QRectF]] = {}
        self._outlines: dict[tuple, list[QRectF]] = {}
        self._bounds = QRectF()
        self.fill_style = Qt.BrushStyle.SolidPattern

    def set_rects(
        self,
        boxes: Sequence[Rect],
        fill: Sequence[tuple] | None = None,
        outline: Sequence[tuple] | None = None,
    ) -> None:
        """``fill`` / ``outline``: one RGBA tuple per box (or None for none)."""
        self.prepareGeometryChange()
        fills: dict[tuple, list[QRectF]] = defaultdict(list)
        outlines: dict[tuple, list[QRectF]] = defaultdict(list)
        bounds = QRectF()
        for i, b in enumerate(boxes):
            r = _qrect(b)
            bounds = bounds.united(r)
            if fill is not None and fill[i] is not None:
                fills[tuple(int(c) for c in fill[i])].append(r)
            if outline is not None and outline[i] is not None:
                outlines[tuple(int(c) for c in outline[i])].append(r)
        self._fills, self._outlines = dict(fills), dict(outlines)
        margin = max(bounds.width(), bounds.height()) * 0.01
        self._bounds = bounds.adjusted(-margin, -margin, margin, margin)
        self.update()

    def clear(self) -> None:
        self.set_rects([])

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setPen(Qt.PenStyle.NoPen)
        for rgba, rects in self._fills.items():
            painter.setBrush(QBrush(QColor(*rgba), self.fill_style))
            painter.drawRects(rects)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for rgba, rects in self._outlines.items():
            pen = QPen(QColor(*rgba))
            pen.setCosmetic(True)
            pen.setWidthF(self.outline_width)
            painter.setPen(pen)
            painter.drawRects(rects)
