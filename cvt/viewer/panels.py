"""Docked panels: the histogram with draggable limits, the health table, the FITS header, and a
colour bar for the metric heat map."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cvt.display import colormap
from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)


class HistogramPanel(QWidget):
    """Histogram of the statistics sample (log counts) with the limits as two draggable lines;
    dragging a line asks for manual limits."""

    limits_dragged = Signal(float, float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.plot = pg.PlotWidget(background=None)
        self.plot.setMenuEnabled(False)
        self.plot.setLogMode(x=False, y=True)
        item = self.plot.getPlotItem()
        item.hideButtons()
        # pyqtgraph makes its plot-options menu without a parent: give it one, so that it goes
        # with the panel instead of outliving the window
        item.ctrlMenu.setParent(self, item.ctrlMenu.windowFlags())
        self.plot.setMinimumHeight(120)
        self.curve = self.plot.plot(
            [0, 1], [1], stepMode="center", fillLevel=0, brush=(120, 160, 220, 120)
        )
        pen = pg.mkPen((255, 200, 0), width=2)
        self.lo_line = pg.InfiniteLine(0.0, angle=90, movable=True, pen=pen)
        self.hi_line = pg.InfiniteLine(1.0, angle=90, movable=True, pen=pen)
        for line in (self.lo_line, self.hi_line):
            self.plot.addItem(line)
            line.sigPositionChangeFinished.connect(self._dragged)
        self.caption = QLabel("")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.plot)
        lay.addWidget(self.caption)

    def set_histogram(self, counts: np.ndarray, edges: np.ndarray, caption: str = "") -> None:
        self.curve.setData(edges, np.maximum(counts, 0.5))
        self.caption.setText(caption)

    def set_limits(self, lo: float, hi: float) -> None:
        for line, v in ((self.lo_line, lo), (self.hi_line, hi)):
            line.blockSignals(True)
            line.setValue(v)
            line.blockSignals(False)

    def _dragged(self, *_):
        lo, hi = sorted((self.lo_line.value(), self.hi_line.value()))
        self.limits_dragged.emit(float(lo), float(hi))


class ColourBar(QWidget):
    """A horizontal colour bar with its two end values and a title, on a dark plate (it is
    drawn over the picture)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet("ColourBar { background: rgba(0, 0, 0, 170); } QLabel { color: white; }")
        self.title = QLabel("")
        self.bar = QLabel()
        self.lo = QLabel("")
        self.hi = QLabel("")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        for w in (self.title, self.lo, self.bar, self.hi):
            lay.addWidget(w)

    def set_colour_bar(self, cmap: str, lo: float, hi: float, title: str) -> None:
        rgb = (colormap(cmap, 256) * 255).astype(np.uint8)
        img = np.ascontiguousarray(np.repeat(rgb[None, :, :], 12, axis=0))
        q = QImage(img.data, 256, 12, 3 * 256, QImage.Format.Format_RGB888).copy()
        self.bar.setPixmap(QPixmap.fromImage(q).scaled(160, 12))
        self.lo.setText(f"{lo:.4g}")
        self.hi.setText(f"{hi:.4g}")
        self.title.setText(title)
        self.adjustSize()
        parent = self.parentWidget()
        if hasattr(parent, "set_corner_widget"):  # placed again: its size changed
            parent.set_corner_widget(self)


STATUS_COLOURS = {
    "fail": QColor(220, 50, 50),
    "warning": QColor(240, 160, 0),
    "known": QColor(150, 150, 220),
}


class HealthPanel(QWidget):
    """The amps that fail or warn, with why; a click on a row asks to fly there."""

    amp_clicked = Signal(str, str)  # detector, amp

    COLUMNS = ("status", "detector", "amp", "reasons")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = QLabel("")
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.cellClicked.connect(self._clicked)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.summary)
        lay.addWidget(self.table)

    def set_rows(self, rows: list[dict], summary: str) -> None:
        self.summary.setText(summary)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, col in enumerate(self.COLUMNS):
                item = QTableWidgetItem(str(r.get(col, "")))
                if col == "status" and r.get("status") in STATUS_COLOURS:
                    item.setForeground(STATUS_COLOURS[r["status"]])
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def _clicked(self, row: int, _col: int) -> None:
        det = self.table.item(row, 1)
        amp = self.table.item(row, 2)
        if det is not None and amp is not None:
            self.amp_clicked.emit(det.text(), amp.text())


class HeaderPanel(QPlainTextEdit):
    """The FITS headers of the detector under the cursor (primary, then the amp's segment)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = self.font()
        font.setFamily("monospace")
        font.setStyleHint(font.StyleHint.Monospace)
        self.setFont(font)
        self.shown_for: str | None = None

    def set_header(self, name: str, text: str) -> None:
        self.shown_for = name
        self.setPlainText(text)


def status_colour(status: str) -> QColor:
    return STATUS_COLOURS.get(status, QColor(Qt.GlobalColor.gray))
