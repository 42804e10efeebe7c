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

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsObject

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)
from cvt.viewer.tiles import Rect


def _qrect(r: Rect) -> QRectF:
    return QRectF(r[0], r[1], r[2] - r[0], r[3] - r[1])


class OutlineLayer(QGraphicsObject):
    """Box outlines with a pen of constant screen width; only the boxes in the exposed area
    are drawn, and none when they are smaller on screen than ``min_screen_px``."""

    def __init__(self, colour: QColor, width: float = 1.0, min_screen_px: float = 0.0):
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.pen = QPen(colour)
        self.pen.setCosmetic(True)
        self.pen.setWidthF(width)
        self.min_screen_px = min_screen_px
        self._boxes = np.empty((0, 4))
        self._box_size = 0.0
        self._bounds = QRectF()
        self._path = QPainterPath()

    def set_boxes(self, boxes: Sequence[Rect]) -> None:
        self.prepareGeometryChange()
        self._boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        b = self._boxes
        self._box_size = float(np.median(b[:, 2] - b[:, 0])) if len(b) else 0.0
        self._bounds = _union(b)
        self._path = QPainterPath()
        for x0, y0, x1, y1 in b.tolist():
            self._path.addRect(x0, y0, x1 - x0, y1 - y0)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        scale = abs(painter.worldTransform().m11())
        if self.min_screen_px and scale * self._box_size < self.min_screen_px:
            return
        if len(self._boxes):
            # one path built once: no Python per box in a frame (building thousands of
            # QRectF per paint held the GUI thread, and the interpreter lock, 5-20 ms)
            painter.setPen(self.pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(self._path)


def _union(b: np.ndarray) -> QRectF:
    if not len(b):
        return QRectF()
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    m = 0.01 * max(x1 - x0, y1 - y0)
    return QRectF(x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m)


class LabelLayer(QGraphicsObject):
    """Labels centred in boxes, drawn in screen pixels, only when the box is wide enough on
    screen (each label has its own threshold: rafts far out, CCDs closer, amps close up)."""

    def __init__(self, colour: QColor = QColor(255, 255, 255, 210), point_size: int = 9):
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.colour = colour
        self.font = QFont()
        self.font.setPointSize(point_size)
        self._texts: list[str] = []
        self._colours: list[QColor | None] = []
        self._boxes = np.empty((0, 4))
        self._min_px = np.empty(0)
        self._bounds = QRectF()

    def set_labels(self, labels: Sequence[tuple], min_screen_px: float = 60.0) -> None:
        """``(text, box)`` or ``(text, box, colour)``; shown when the box's width on screen is
        at least ``min_screen_px``."""
        self._texts, self._colours = [], []
        self._boxes, self._min_px = np.empty((0, 4)), np.empty(0)
        self.add_labels(labels, min_screen_px)

    def add_labels(self, labels: Sequence[tuple], min_screen_px: float) -> None:
        self.prepareGeometryChange()
        self._texts += [lb[0] for lb in labels]
        self._colours += [lb[2] if len(lb) > 2 else None for lb in labels]
        boxes = np.array([lb[1] for lb in labels], dtype=np.float64).reshape(-1, 4)
        self._boxes = np.vstack([self._boxes, boxes])
        self._min_px = np.r_[self._min_px, np.full(len(boxes), float(min_screen_px))]
        self._bounds = _union(self._boxes)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        t = painter.worldTransform()
        scale = abs(t.m11())
        area = option.exposedRect
        b = self._boxes
        if not len(b):
            return
        sel = np.flatnonzero(
            ((b[:, 2] - b[:, 0]) * scale >= self._min_px)
            & (b[:, 0] < area.right())
            & (b[:, 2] > area.left())
            & (b[:, 1] < area.bottom())
            & (b[:, 3] > area.top())
        )[:2000]
        if not sel.size:
            return
        painter.save()
        painter.resetTransform()
        painter.setFont(self.font)
        cx = 0.5 * (b[sel, 0] + b[sel, 2])
        cy = 0.5 * (b[sel, 1] + b[sel, 3])
        for i, x, y in zip(sel.tolist(), cx.tolist(), cy.tolist()):
            p = t.map(QPointF(x, y))
            painter.setPen(self._colours[i] or self.colour)
            painter.drawText(
                QRectF(p.x() - 100, p.y() - 10, 200, 20),
                Qt.AlignmentFlag.AlignCenter,
                self._texts[i],
            )
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
