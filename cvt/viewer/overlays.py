"""Overlays, as a few scene items each drawing many things (not thousands of items).

- ``OutlineLayer``: boxes (rafts, CCDs, amps) as one cosmetic-pen path.
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
from PySide6.QtWidgets import QGraphicsItem, QGraphicsObject, QGraphicsPathItem

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)
from cvt.viewer.tiles import Rect


def _qrect(r: Rect) -> QRectF:
    return QRectF(r[0], r[1], r[2] - r[0], r[3] - r[1])


class OutlineLayer(QGraphicsPathItem):
    """Box outlines with a pen of constant screen width."""

    def __init__(self, colour: QColor, width: float = 1.0, min_screen_px: float = 0.0):
        super().__init__()
        pen = QPen(colour)
        pen.setCosmetic(True)
        pen.setWidthF(width)
        self.setPen(pen)
        self.setBrush(Qt.BrushStyle.NoBrush)
        self.min_screen_px = min_screen_px  # hide when the boxes are smaller than this
        self._box_size = 0.0

    def set_boxes(self, boxes: Sequence[Rect]) -> None:
        path = QPainterPath()
        for b in boxes:
            path.addRect(_qrect(b))
        self.setPath(path)
        self._box_size = float(np.median([b[2] - b[0] for b in boxes])) if len(boxes) else 0.0

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if self.min_screen_px:
            scale = painter.worldTransform().m11()
            if abs(scale) * self._box_size < self.min_screen_px:
                return
        super().paint(painter, option, widget)


class LabelLayer(QGraphicsObject):
    """Labels centred in boxes, drawn in screen pixels, only when the box is wide enough."""

    def __init__(self, colour: QColor = QColor(255, 255, 255, 210), point_size: int = 9):
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.colour = colour
        self.font = QFont()
        self.font.setPointSize(point_size)
        self._labels: list[tuple[str, Rect, float, QColor | None]] = []
        self._bounds = QRectF()

    def set_labels(self, labels: Sequence[tuple], min_screen_px: float = 60.0) -> None:
        """``(text, box)`` or ``(text, box, colour)``; shown when the box's width on screen is
        at least ``min_screen_px``."""
        self.prepareGeometryChange()
        self._labels = [
            (lb[0], lb[1], min_screen_px, lb[2] if len(lb) > 2 else None) for lb in labels
        ]
        self._bounds = QRectF()
        for _, b, _, _ in self._labels:
            self._bounds = self._bounds.united(_qrect(b))

    def add_labels(self, labels: Sequence[tuple], min_screen_px: float) -> None:
        self.prepareGeometryChange()
        for lb in labels:
            self._labels.append((lb[0], lb[1], min_screen_px, lb[2] if len(lb) > 2 else None))
            self._bounds = self._bounds.united(_qrect(lb[1]))

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        t = painter.worldTransform()
        scale = abs(t.m11())
        exposed = option.exposedRect
        painter.save()
        painter.resetTransform()
        painter.setFont(self.font)
        drawn = 0
        for text, b, min_px, colour in self._labels:
            if (b[2] - b[0]) * scale < min_px:
                continue
            if b[2] < exposed.left() or b[0] > exposed.right():
                continue
            if b[3] < exposed.top() or b[1] > exposed.bottom():
                continue
            p = t.map(QPointF((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
            painter.setPen(colour or self.colour)
            painter.drawText(
                QRectF(p.x() - 100, p.y() - 10, 200, 20), Qt.AlignmentFlag.AlignCenter, text
            )
            drawn += 1
            if drawn > 2000:
                break
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
