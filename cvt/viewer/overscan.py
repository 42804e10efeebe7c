"""Overscan shown: a dock with the untrimmed CCD under the cursor, in its readout layout.

Each amp's whole raw segment (prescan, data, serial and parallel overscan) is rebuilt bit for
bit from the store (``DetectorImage.raw_segments``: level 0 plus the rounded biases plus the
kept overscan), flipped like its data section and put where the amp sits on the CCD (C1j top
row, C0j bottom, x-index j), as the Rubin ISR's untrimmed assembly does. The picture is in the
CCD frame (corner sensors are not turned) and every value is raw ADU: the overscan is only worth
looking at against the raw data next to it (the bias level, a serial CTI trail leaving the last
data column, a bias jump), and one unit in the picture means one stretch across the boundaries.
The hover readout below it says which segment, region and segment pixel, and for the data
section the corrected value too.

Why a dock and not drawn in place: the untrimmed CCD is larger than its footprint (E2V: 4608 x
4096 raw pixels for a 4096 x 4004 footprint, wider than the gap to the next CCD), so in place it
would hide its neighbours or be squeezed off its true scale; the focal-plane view stays true
geometry, and the dock follows the detector under the cursor with the window's stretch, scope
and colour map (manual limits are set for corrected values, so the dock uses zscale then).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QLabel, QVBoxLayout, QWidget

from cvt.display import SAMPLE_SIZE, argb_lut, build_transfers, colourise, sorted_sample
from cvt.viewer.view import BACKGROUND, TileItem

REGIONS = ("prescan", "data", "serial overscan", "parallel overscan")


@dataclass
class Untrimmed:
    """One CCD's raw segments in readout layout (row 0 at the bottom, CCD frame)."""

    detector: str
    pixels: np.ndarray  # int32 (rows, cols)
    amps: list[dict]
    datasec: tuple[int, int, int, int]  # x0, x1, y0, y1 of a raw segment (zero-based)
    seg_shape: tuple[int, int]  # (ny, nx) of a raw segment
    blocks: list[tuple[int, int, int, int]]  # per amp: r0, r1, c0, c1 in ``pixels``
    bias: np.ndarray  # (amp, raw row) rounded row bias + the col bias: the data's correction
    col_bias: np.ndarray

    def where(self, row: int, col: int) -> dict | None:
        """The amp, segment pixel (x, y, zero-based as in the raw segment) and region."""
        ny, nx = self.pixels.shape
        if not (0 <= row < ny and 0 <= col < nx):
            return None
        for i, (r0, r1, c0, c1) in enumerate(self.blocks):
            if r0 <= row < r1 and c0 <= col < c1:
                a = self.amps[i]
                sx, sy = col - c0, row - r0
                sny, snx = self.seg_shape
                if a["flip_x"]:
                    sx = snx - 1 - sx
                if a["flip_y"]:
                    sy = sny - 1 - sy
                x0, x1, y0, y1 = self.datasec
                if sx >= x1:
                    region = "serial overscan"
                elif sy >= y1:
                    region = "parallel overscan"
                elif sx < x0:
                    region = "prescan"
                else:
                    region = "data"
                return {"amp": i, "name": a["name"], "x": sx, "y": sy, "region": region}
        return None

    def readout(self, row: int, col: int) -> str:
        w = self.where(row, col)
        if w is None:
            return ""
        raw = int(self.pixels[row, col])
        seg = "Segment" + w["name"][1:]
        text = (
            f"{self.detector} {w['name']} ({seg})  segment pixel ({w['x']}, {w['y']})  "
            f"{w['region']}: raw {raw} ADU"
        )
        if w["region"] == "data":
            x0, _, _, _ = self.datasec
            b = int(np.rint(self.bias[w["amp"], w["y"]])) + int(
                np.rint(self.col_bias[w["amp"], w["x"] - x0])
            )
            text += f"  corrected {raw - b} (bias {b})"
        return text


def untrimmed(image) -> Untrimmed:
    """Worker: the untrimmed CCD of a ``core.exposure.DetectorImage`` (reads level 0)."""
    segs = image.raw_segments()
    n, sny, snx = segs.shape
    amps = image.amps
    cols = max(a["x0"] // a["nx"] for a in amps) + 1
    rows = max(a["y0"] // a["ny"] for a in amps) + 1
    out = np.zeros((rows * sny, cols * snx), dtype=np.int32)
    blocks = []
    for i, a in enumerate(amps):
        seg = segs[i]
        if a["flip_x"]:
            seg = seg[:, ::-1]
        if a["flip_y"]:
            seg = seg[::-1, :]
        r0, c0 = (a["y0"] // a["ny"]) * sny, (a["x0"] // a["nx"]) * snx
        out[r0 : r0 + sny, c0 : c0 + snx] = seg
        blocks.append((r0, r0 + sny, c0, c0 + snx))
    return Untrimmed(
        image.name,
        out,
        list(amps),
        tuple(image.attrs["datasec"]),
        (sny, snx),
        blocks,
        np.asarray(image.row_bias),
        np.asarray(image.col_bias),
    )


def render(u: Untrimmed, settings) -> np.ndarray:
    """Worker: the ARGB picture of an untrimmed CCD with the window's display settings."""
    if settings.limits == "manual":
        settings = settings.with_(limits="zscale")
    data = u.pixels.astype(np.float32)
    samples = [sorted_sample(data[r0:r1, c0:c1], SAMPLE_SIZE) for r0, r1, c0, c1 in u.blocks]
    transfers = build_transfers(0, settings, samples, np.zeros(len(samples), dtype=np.int64))
    index = np.empty(data.shape, dtype=np.uint8)
    for i, (r0, r1, c0, c1) in enumerate(u.blocks):
        index[r0:r1, c0:c1] = transfers.apply(data[r0:r1, c0:c1], i)
    return colourise(index, argb_lut(settings.cmap))


def _load(image, settings):
    u = untrimmed(image)
    return u, render(u, settings)


class OverscanDock(QObject):
    """The dock, its View-menu toggle (key O) and the reads behind it."""

    loaded = Signal(str)  # the detector now drawn
    failed = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.current: Untrimmed | None = None
        self.argb: np.ndarray | None = None
        self._busy = False
        self._next: str | None = None
        self._render_busy = False
        self._render_again = False
        box = QWidget(window)
        lay = QVBoxLayout(box)
        lay.setContentsMargins(2, 2, 2, 2)
        self.caption = QLabel("untrimmed CCD: hover a detector", box)
        self.view = pg.GraphicsView(box, background=BACKGROUND)
        self.vb = pg.ViewBox(lockAspect=True, enableMenu=False, invertY=False)
        self.view.setCentralItem(self.vb)
        self.item = TileItem()
        self.vb.addItem(self.item)
        self.readout = QLabel("", box)
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.caption)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.readout)
        self.dock = QDockWidget("Overscan (untrimmed CCD, raw ADU)", window)
        self.dock.setObjectName("Overscan")
        self.dock.setWidget(box)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.action = QAction("Show overscan", window)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("O"))
        self.action.setToolTip("the untrimmed CCD under the cursor: prescan, data and overscan")
        self.action.toggled.connect(self.set_shown)
        window.addAction(self.action)
        self.dock.visibilityChanged.connect(self._dock_visibility)
        self.view.scene().sigMouseMoved.connect(self._mouse_moved)
        window.settings_changed.connect(lambda _: self._rerender())

    @property
    def shown(self) -> bool:
        return self.action.isChecked()

    def set_shown(self, on: bool) -> None:
        if self.action.isChecked() != on:
            self.action.setChecked(on)  # comes back here through toggled
            return
        self.dock.setVisible(on)
        if on:
            self.follow(self._detector_in_view())

    def _dock_visibility(self, visible: bool) -> None:
        # the dock's own close button unticks the action (but a tabbed-away dock stays on)
        if not visible and not self.dock.isVisible() and self.dock.isHidden():
            self.action.setChecked(False)

    def _detector_in_view(self) -> str | None:
        """The detector at the centre of the view (the cursor takes over as it moves)."""
        w = self.w
        if w.layout is None:
            return None
        x0, y0, x1, y1 = w.view.view_rect()
        loc = w.layout.locate((x0 + x1) / 2, (y0 + y1) / 2)
        return loc.detector if loc.detector and not loc.absent else None

    def follow(self, detector: str | None) -> None:
        """Show this detector's untrimmed CCD (read on a worker), if shown and not already."""
        if not self.shown or not detector or self.w.layout is None:
            return
        if self.current is not None and self.current.detector == detector:
            return
        if self._busy:
            self._next = detector
            return
        image = self.w.images.get(detector)
        if image is None:
            return
        self._busy = True
        self.caption.setText(f"{detector}: reading the raw segments…")
        self.w.runner.submit(
            "io",
            _load,
            image,
            self.w.settings,
            on_done=self._on_loaded,
            on_error=lambda e, d=detector: self._on_error(d, e),
        )

    def reset(self) -> None:
        """A new exposure: forget the CCD shown, show the new one's."""
        self.current, self.argb = None, None
        self.item.set_image(None)
        self.readout.setText("")
        self.follow(self._detector_in_view())

    def _on_loaded(self, result) -> None:
        self._busy = False
        u, argb = result
        if self.w.images.get(u.detector) is None:  # the exposure changed meanwhile
            self._after()
            return
        self.current, self.argb = u, argb
        self._draw()
        (x0, x1, _, _), (sny, snx) = u.datasec, u.seg_shape
        self.caption.setText(
            f"{u.detector} untrimmed, raw ADU: {len(u.amps)} segments of {snx} x {sny} "
            f"(data columns {x0}..{x1 - 1}), readout layout, CCD frame"
        )
        self.loaded.emit(u.detector)
        self._after()

    def _on_error(self, detector: str, exc: BaseException) -> None:
        self._busy = False
        msg = f"{detector}: cannot rebuild the raw segments: {exc}"
        self.caption.setText(msg)
        self.failed.emit(msg)
        self._after()

    def _after(self) -> None:
        nxt, self._next = self._next, None
        if nxt:
            self.follow(nxt)

    def _draw(self) -> None:
        ny, nx = self.argb.shape
        self.item.set_image(self.argb)
        self.item.place((0.0, 0.0, float(nx), float(ny)))
        self.vb.setRange(xRange=(0, nx), yRange=(0, ny), padding=0.02)

    def _rerender(self) -> None:
        """The stretch or colour map changed: again from the pixels in memory (no read)."""
        if self.current is None or not self.shown:
            return
        if self._render_busy:
            self._render_again = True
            return
        self._render_busy = True
        u = self.current
        self.w.runner.submit(
            "cpu", render, u, self.w.settings, on_done=lambda argb: self._on_rendered(u, argb)
        )

    def _on_rendered(self, u: Untrimmed, argb: np.ndarray) -> None:
        self._render_busy = False
        if u is self.current:
            self.argb = argb
            self._draw()
        if self._render_again:
            self._render_again = False
            self._rerender()

    def _mouse_moved(self, pos) -> None:
        if self.current is None or not self.vb.sceneBoundingRect().contains(pos):
            return
        p = self.vb.mapSceneToView(pos)
        self.readout.setText(self.hover(p.x(), p.y()))

    def hover(self, x: float, y: float) -> str:
        """The readout at picture position ``(x, y)`` (columns, rows from the bottom left)."""
        if self.current is None:
            return ""
        return self.current.readout(int(np.floor(y)), int(np.floor(x)))
