"""The focal-plane view: one pyqtgraph scene in focal-plane pixels (x right, y up).

Tiles are ``TileItem`` s: premultiplied ARGB32 images (index 0 = no data, transparent), placed
at ``origin + level scale``; their rows are already y-up, so the items are not flipped and the
view box is not inverted. Items are pooled: panning across the
plane reuses a bounded set of them. The view never reads data: it draws what it is given and
says (``view_changed``) when what it shows has moved.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QPixmap, QTransform
from PySide6.QtWidgets import QGraphicsPixmapItem, QWidget

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)
from cvt.viewer.tiles import Rect, Tile, TileKey

BACKGROUND = QColor(24, 24, 28)
MIN_RANGE = 6.0  # focal-plane pixels across the view at the deepest zoom
CORNER_MARGIN = 6  # screen pixels between a corner widget and the view's edges


class FocalPlaneView(pg.GraphicsView):
    """The scene and its navigation (mouse, wheel, keys, fly-to)."""

    view_changed = Signal()  # coalesced: once per event-loop turn at most
    hovered = Signal(float, float)
    left = Signal()
    fly_finished = Signal()

    def __init__(self, parent=None):
        super().__init__(parent, background=BACKGROUND)
        self.vb = pg.ViewBox(lockAspect=True, enableMenu=False, invertY=False, defaultPadding=0.0)
        self.vb.setMouseEnabled(True, True)
        self.setCentralItem(self.vb)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.extent: Rect = (-1.0, -1.0, 1.0, 1.0)
        self._items: dict[TileKey, pg.ImageItem] = {}
        self._tiles: dict[TileKey, tuple[Tile, int, int]] = {}  # shown tile, its generations
        self._pool: list[pg.ImageItem] = []
        self._changed = QTimer(self, singleShot=True, interval=0)
        self._changed.timeout.connect(self.view_changed)
        self.vb.sigRangeChanged.connect(lambda *_: self._changed.start())
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        self._fly = QTimer(self, interval=16)
        self._fly.timeout.connect(self._fly_step)
        self._fly_path: tuple | None = None
        self.fly_duration_ms = 350
        self._corner: QWidget | None = None

    def set_corner_widget(self, widget: QWidget) -> None:
        """A small widget (a legend) kept in the lower left corner, over the picture."""
        self._corner = widget
        self._place_corner()

    def _place_corner(self) -> None:
        w = getattr(self, "_corner", None)  # resized once inside the base class's __init__
        if w is not None:
            w.adjustSize()
            w.move(CORNER_MARGIN, self.height() - w.height() - CORNER_MARGIN)
            w.raise_()

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._place_corner()

    # --- geometry

    def view_rect(self) -> Rect:
        r = self.vb.viewRect()
        return (r.left(), r.top(), r.right(), r.bottom())  # y up: top() is the lower y

    def pixel_size(self) -> float:
        """Focal-plane pixels per screen pixel."""
        w = max(1.0, float(self.viewport().width()))  # the view box fills it; cheaper to ask
        r = self.vb.viewRect()
        return max(r.width() / w, 1e-9)

    def fp_to_widget(self, x: float, y: float) -> QPointF:
        """A focal-plane point in this widget's pixel coordinates (for tests and markers)."""
        scene = self.vb.mapViewToScene(QPointF(x, y))
        return QPointF(self.mapFromScene(scene))

    def widget_to_fp(self, px: float, py: float) -> tuple[float, float]:
        p = self.vb.mapSceneToView(self.mapToScene(int(px), int(py)))
        return p.x(), p.y()

    def set_extent(self, rect: Rect) -> None:
        """The focal plane's box: what fit shows, and how far out one may zoom."""
        self.extent = rect
        w, h = rect[2] - rect[0], rect[3] - rect[1]
        span = 4 * max(w, h)
        self.vb.setLimits(
            xMin=rect[0] - span,
            xMax=rect[2] + span,
            yMin=rect[1] - span,
            yMax=rect[3] + span,
            minXRange=MIN_RANGE,
            minYRange=MIN_RANGE,
            maxXRange=3 * max(w, h),
            maxYRange=3 * max(w, h),
        )

    # --- navigation

    def set_rect(self, rect: Rect) -> None:
        self._fly.stop()
        self._fly_path = None
        self.vb.setRange(
            QRectF(rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]), padding=0.0
        )

    def center_scale(self) -> tuple[float, float, float]:
        """(centre x, centre y, focal-plane pixels per screen pixel): what two linked views
        share when their widgets differ in size."""
        x0, y0, x1, y1 = self.view_rect()
        return (x0 + x1) / 2, (y0 + y1) / 2, self.pixel_size()

    def set_center_scale(self, cx: float, cy: float, px: float) -> None:
        """Show ``(cx, cy)`` at the centre, ``px`` focal-plane pixels per screen pixel."""
        w = max(1.0, float(self.viewport().width())) * px / 2
        h = max(1.0, float(self.viewport().height())) * px / 2
        self.set_rect((cx - w, cy - h, cx + w, cy + h))

    def fit(self, animate: bool = False) -> None:
        self.fly_to(self.extent, animate=animate, margin=0.02)

    def fly_to(self, rect: Rect, animate: bool = True, margin: float = 0.08) -> None:
        """Pan and zoom to show ``rect`` (with a margin), smoothly if ``animate``: the scale is
        interpolated geometrically, the centre linearly."""
        x0, y0, x1, y1 = rect
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        target = (x0 - mx, y0 - my, x1 + mx, y1 + my)
        if not animate or self.fly_duration_ms <= 0 or not self.isVisible():
            self.set_rect(target)
            self.fly_finished.emit()
            return
        self._fly_path = (self.view_rect(), target, 0)
        self._fly.start()

    @property
    def flying(self) -> bool:
        return self._fly.isActive()

    @property
    def change_pending(self) -> bool:
        """The view moved and ``view_changed`` has not been delivered yet."""
        return self._changed.isActive()

    def _fly_step(self) -> None:
        start, end, step = self._fly_path
        n = max(1, self.fly_duration_ms // self._fly.interval())
        step += 1
        t = min(1.0, step / n)
        t = t * t * (3 - 2 * t)  # smoothstep
        (a0, b0, a1, b1), (c0, d0, c1, d1) = start, end
        cx = (a0 + a1) / 2 + t * ((c0 + c1) / 2 - (a0 + a1) / 2)
        cy = (b0 + b1) / 2 + t * ((d0 + d1) / 2 - (b0 + b1) / 2)
        w = math.exp(math.log(a1 - a0) + t * (math.log(c1 - c0) - math.log(a1 - a0)))
        h = math.exp(math.log(b1 - b0) + t * (math.log(d1 - d0) - math.log(b1 - b0)))
        self.vb.setRange(QRectF(cx - w / 2, cy - h / 2, w, h), padding=0.0)
        self._fly_path = (start, end, step)
        if t >= 1.0:
            self._fly.stop()
            self._fly_path = None
            self.fly_finished.emit()

    def zoom(self, factor: float, center: tuple[float, float] | None = None) -> None:
        """Zoom in by ``factor`` (> 1) or out (< 1) about ``center`` (default: the middle)."""
        x0, y0, x1, y1 = self.view_rect()
        cx, cy = center if center is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
        self.set_rect(
            (
                cx - (cx - x0) / factor,
                cy - (cy - y0) / factor,
                cx + (x1 - cx) / factor,
                cy + (y1 - cy) / factor,
            )
        )

    def pan(self, fx: float, fy: float) -> None:
        """Move by fractions of the view's width and height."""
        x0, y0, x1, y1 = self.view_rect()
        dx, dy = fx * (x1 - x0), fy * (y1 - y0)
        self.set_rect((x0 + dx, y0 + dy, x1 + dx, y1 + dy))

    def keyPressEvent(self, ev: QKeyEvent) -> None:
        k = ev.key()
        if k in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom(1.5)
        elif k in (Qt.Key.Key_Minus, Qt.Key.Key_Underscore):
            self.zoom(1 / 1.5)
        elif k == Qt.Key.Key_Left:
            self.pan(-0.2, 0)
        elif k == Qt.Key.Key_Right:
            self.pan(0.2, 0)
        elif k == Qt.Key.Key_Up:
            self.pan(0, 0.2)
        elif k == Qt.Key.Key_Down:
            self.pan(0, -0.2)
        elif k in (Qt.Key.Key_F, Qt.Key.Key_Home):
            self.fit(animate=True)
        else:
            super().keyPressEvent(ev)
            return
        ev.accept()

    def _mouse_moved(self, pos) -> None:
        if not self.vb.sceneBoundingRect().contains(pos):
            self.left.emit()
            return
        p = self.vb.mapSceneToView(pos)
        self.hovered.emit(p.x(), p.y())

    def leaveEvent(self, ev) -> None:
        self.left.emit()
        super().leaveEvent(ev)

    # --- tiles

    def show_tile(self, tile: Tile, rect: Rect, z: float) -> None:
        """Draw (or redraw) a tile's colour image over ``rect`` at depth ``z``."""
        item = self._items.get(tile.key)
        if item is None:
            item = self._pool.pop() if self._pool else TileItem()
            self._items[tile.key] = item
            if item.scene() is None:
                self.vb.addItem(item, ignoreBounds=True)
            item.setVisible(True)
        item.setZValue(z)
        if item.pixels is not tile.argb:  # an upload costs ~1.3 ms a tile: only new pixels
            item.set_image(tile.argb)
        item.place(rect)
        self._tiles[tile.key] = (tile, tile.generation, tile.colour)

    def retag_tile(self, tile: Tile) -> None:
        """The tile drawn is unchanged but now stands for the generation it carries."""
        shown = self._tiles.get(tile.key)
        if shown is not None and shown[0] is tile:
            self._tiles[tile.key] = (tile, tile.generation, shown[2])

    def hide_tile(self, key: TileKey) -> None:
        item = self._items.pop(key, None)
        self._tiles.pop(key, None)
        if item is not None:
            item.setVisible(False)
            item.set_image(None)
            if len(self._pool) < 64:
                self._pool.append(item)
            else:
                self.vb.removeItem(item)

    def shown(self) -> set[TileKey]:
        return set(self._items)

    def shown_tile(self, key: TileKey) -> tuple[Tile | None, int, int]:
        """The tile drawn for ``key``, and the stretch and colour generations it was drawn
        with."""
        return self._tiles.get(key, (None, -1, -1))

    def item(self, key: TileKey) -> TileItem | None:
        return self._items.get(key)

    def clear_tiles(self) -> None:
        for key in list(self._items):
            self.hide_tile(key)


class TileItem(QGraphicsPixmapItem):
    """One tile: its premultiplied-ARGB32 pixels as a pixmap (drawn as is, with no conversion
    per frame and no Python in the paint: nothing waits for the interpreter lock while worker
    threads compute), scaled onto its focal-plane box, rows upwards, nearest-pixel."""

    def __init__(self):
        super().__init__()
        self.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.setShapeMode(QGraphicsPixmapItem.ShapeMode.BoundingRectShape)
        self._pixels: np.ndarray | None = None
        self._w = self._h = 1

    def set_image(self, argb: np.ndarray | None) -> None:
        if argb is None:
            self._pixels = None
            self.setPixmap(QPixmap())
            return
        argb = np.ascontiguousarray(argb, dtype=np.uint32)
        h, w = argb.shape
        image = QImage(argb.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        self.setPixmap(QPixmap.fromImage(image))  # a copy: the array may go
        self._pixels = argb
        self._w, self._h = w, h

    def place(self, rect: Rect) -> None:
        self.setTransform(
            QTransform(
                (rect[2] - rect[0]) / self._w, 0, 0, (rect[3] - rect[1]) / self._h, rect[0], rect[1]
            )
        )

    @property
    def pixels(self) -> np.ndarray | None:
        return self._pixels
