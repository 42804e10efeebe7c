"""The "Trend" dock: one amp's metric across the repository's exposures, from its catalog.

The series is ``core.trend.series`` (the same numbers as ``cvt trend``), queried on the runner's
``follow`` pool: a catalog is a local SQLite file or, for a server, a download. It is cut to one
image type (biases and flats do not share a trend; the exposure on screen's type when an amp is
picked or the exposure's type changes) and a span (the last day, week or month of the
repository). The line joins the points in x order (against airmass too); the point of the
exposure on screen is ringed; clicking a point opens that exposure. An amp is picked from the
view's context menu ("Trend of R22_S11_C07"), or from the health table while the dock is open.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMenu, QVBoxLayout, QWidget

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)

DEFAULT_METRIC = "read_noise_e"
ALL_TYPES = "all types"
SPANS = {"all": None, "last day": 1.0, "last week": 7.0, "last 30 days": 30.0}  # days


class TrendPanel(QWidget):
    """Metric and axis pickers over a plot of one amp's series."""

    point_clicked = Signal(str)  # obsid
    choice_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.metric_box = QComboBox(self)
        self.vs_box = QComboBox(self)
        from core.trend import VS

        self.vs_box.addItems(list(VS))
        self.type_box = QComboBox(self)
        self.type_box.addItem(ALL_TYPES)
        self.span_box = QComboBox(self)
        self.span_box.addItems(list(SPANS))
        self.title = QLabel("pick an amp: right-click it in the view", self)
        self.plot = pg.PlotWidget(background=None)
        self.plot.setMenuEnabled(False)
        item = self.plot.getPlotItem()
        item.hideButtons()
        item.ctrlMenu.setParent(self, item.ctrlMenu.windowFlags())  # dies with the panel
        self.plot.setMinimumHeight(140)
        self.line = self.plot.plot([], [], pen=pg.mkPen(120, 160, 220, 160, width=1))
        self.points = pg.ScatterPlotItem(
            size=8, pen=pg.mkPen(30, 30, 30), brush=pg.mkBrush(120, 180, 255), hoverable=True
        )
        self.points.sigClicked.connect(self._clicked)
        self.plot.addItem(self.points)
        self.current = pg.ScatterPlotItem(
            size=16, pen=pg.mkPen(255, 200, 0, width=2.5), brush=None, symbol="o"
        )
        self.plot.addItem(self.current)
        self.series = None  # the finite points plotted (core.trend.Series)
        top = QHBoxLayout()
        top.addWidget(QLabel("metric", self))
        top.addWidget(self.metric_box, 1)
        top.addWidget(QLabel("against", self))
        top.addWidget(self.vs_box)
        top.addWidget(self.type_box)
        top.addWidget(self.span_box)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(self.title)
        lay.addWidget(self.plot, 1)
        # the span cuts the series already read (TrendControls); these ask the catalog again
        for box in (self.metric_box, self.vs_box, self.type_box):
            box.currentTextChanged.connect(lambda _: self.choice_changed.emit())

    @property
    def metric(self) -> str:
        return self.metric_box.currentText()

    @property
    def vs(self) -> str:
        return self.vs_box.currentText()

    @property
    def image_type(self) -> str | None:
        """The image type shown (None: all)."""
        text = self.type_box.currentText()
        return None if text in ("", ALL_TYPES) else text

    @property
    def span_days(self) -> float | None:
        return SPANS.get(self.span_box.currentText())

    def set_metrics(self, names: list[str], chosen: str) -> None:
        _set_items(self.metric_box, names, chosen)

    def set_image_types(self, names: list[str], chosen: str | None) -> None:
        """The image types to pick from (the catalog's, and ``chosen``), ``chosen`` picked."""
        names = sorted({*names, *([chosen] if chosen else [])})
        _set_items(self.type_box, [ALL_TYPES, *names], chosen or ALL_TYPES)

    def set_series(self, series, current_obsid: str | None) -> None:
        s = series.finite()
        self.series = s
        order = np.argsort(s.x, kind="stable")  # the points come in time order
        self.line.setData(s.x[order], s.y[order])
        self.points.setData(
            s.x, s.y, data=list(range(len(s))), brush=[_brush(st) for st in s.status]
        )
        self.plot.setLabel("bottom", s.x_label)
        self.plot.setLabel("left", s.metric)
        slope = s.slope()
        self.title.setText(
            f"{s.amp}  {s.metric}: {len(s)} exposures"
            + (f", slope {slope:.3g} per {_unit(s.vs)}" if np.isfinite(slope) else "")
        )
        self.highlight(current_obsid)

    def highlight(self, obsid: str | None) -> None:
        s = self.series
        if s is None or obsid not in s.obsid:
            self.current.setData([], [])
            return
        i = s.obsid.index(obsid)
        self.current.setData([s.x[i]], [s.y[i]])

    def show_message(self, text: str) -> None:
        self.title.setText(text)

    def _clicked(self, _item, points, _ev=None) -> None:
        if self.series is None or not len(points):
            return
        self.point_clicked.emit(self.series.obsid[int(points[0].data())])


def _set_items(box: QComboBox, names: list[str], chosen: str) -> None:
    """Replace a picker's items without a ``choice_changed`` (no query for it)."""
    box.blockSignals(True)
    box.clear()
    box.addItems(names)
    box.setCurrentText(chosen)
    box.blockSignals(False)


def _brush(status: str | None):
    colours = {"fail": (230, 60, 60), "warning": (255, 170, 0), "known": (120, 140, 200)}
    return pg.mkBrush(*colours.get(status or "", (120, 180, 255)))


def _unit(vs: str) -> str:
    return {"time": "day", "seq": "exposure", "airmass": "unit airmass"}[vs]


class TrendControls(QObject):
    """The dock, the view's context menu, and the queries (on a worker)."""

    shown = Signal()  # a series was plotted (tests)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.panel = TrendPanel(window)
        self.dock = window._dock("Trend", self.panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.dock.hide()
        self.amp: str | None = None
        self.repo: str | None = None
        self._seq = 0
        self._shown_type: str | None = None  # the image type of the exposure on screen
        self._full = None  # the series read, before the span cuts it (core.trend.Series)
        self.panel.choice_changed.connect(self.query)
        self.panel.span_box.currentTextChanged.connect(
            lambda _: self._full is not None and self._show()
        )
        self.panel.point_clicked.connect(self._open)
        view = window.view
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        view.customContextMenuRequested.connect(self._context_menu)
        window.health_panel.amp_clicked.connect(
            lambda det, amp: self.dock.isVisible() and self.show_amp(f"{det}_{amp}")
        )

    def show_amp(self, amp: str) -> None:
        """Plot ``amp`` (``R22_S11_C07``)'s trend in the dock."""
        from cvt.viewer.window import split_repository

        if not self.window.url:
            return
        self.amp = amp
        self.repo = split_repository(self.window.url)[0]
        self._follow_image_type(self.window.exposure)
        self.dock.show()
        self.query()

    def _follow_image_type(self, exposure) -> None:
        """The filter to the image type of ``exposure`` (the one on screen)."""
        kind = exposure.attrs.get("image_type") if exposure is not None else None
        self._shown_type = kind
        p = self.panel
        types = [p.type_box.itemText(i) for i in range(1, p.type_box.count())]
        p.set_image_types(types, kind)

    def query(self) -> None:
        if self.amp is None or self.repo is None:
            return
        self._seq += 1
        seq = self._seq
        metric = self.panel.metric or self._default_metric()
        self.panel.show_message(f"{self.amp}: reading the catalog…")
        self.window.runner.submit(
            "follow",
            query_trend,
            self.repo,
            self.amp,
            metric,
            self.panel.vs,
            self.panel.image_type,
            on_done=lambda res: seq == self._seq and self._on_series(res),
            on_error=lambda exc: seq == self._seq and self.panel.show_message(f"no trend: {exc}"),
        )

    def _default_metric(self) -> str:
        name = self.window.metric_box.currentText()
        return name if name not in ("", "(none)") else DEFAULT_METRIC

    def _on_series(self, result) -> None:
        metrics, image_types, self._full = result
        self.panel.set_metrics(metrics, self._full.metric)
        self.panel.set_image_types(image_types, self.panel.image_type)
        self._show()

    def _show(self) -> None:
        """The series read, cut to the span picked (no new query: the catalog may be a
        download)."""
        exposure = self.window.exposure
        self.panel.set_series(
            self._full.last(self.panel.span_days), exposure.obsid if exposure is not None else None
        )
        self.shown.emit()

    def opened(self, exposure) -> None:
        """Another exposure on screen: ring it (and ask again: it may be new in the catalog, or
        of another image type, which the filter then follows)."""
        self.panel.highlight(exposure.obsid)
        if not (self.dock.isVisible() and self.amp):
            return
        if exposure.attrs.get("image_type") != self._shown_type:
            self._follow_image_type(exposure)
            self.query()
        elif self._full is None or exposure.obsid not in self._full.obsid:  # new, or uncut
            self.query()

    def _open(self, obsid: str) -> None:
        from cvt.viewer.window import join_repository

        if self.repo is not None:
            self.window.open(join_repository(self.repo, obsid))

    def menu_for(self, pos) -> QMenu | None:
        """The view's context menu at widget position ``pos``: "Trend of" the amp there."""
        w = self.window
        if w.layout is None:
            return None
        fx, fy = w.view.widget_to_fp(pos.x(), pos.y())
        loc = w.layout.locate(fx, fy)
        if not loc.detector or loc.absent or not loc.amp:
            return None
        amp = f"{loc.detector}_{loc.amp}"
        menu = QMenu(w.view)
        menu.addAction(f"Trend of {amp}", lambda: self.show_amp(amp))
        return menu

    def _context_menu(self, pos) -> None:
        menu = self.menu_for(pos)
        if menu is not None:
            menu.exec(self.window.view.mapToGlobal(pos))
            menu.deleteLater()


def query_trend(
    repo: str,
    amp: str,
    metric: str,
    vs: str,
    image_type: str | None = None,
):
    """Worker: (metrics the catalog holds, its image types, the series of ``amp``'s ``metric``
    for ``image_type`` (None: all))."""
    from core.catalog import open_catalog
    from core.trend import series

    with open_catalog(repo) as cat:
        metrics = sorted(cat.metrics())
        if metric not in metrics:
            metric = DEFAULT_METRIC if DEFAULT_METRIC in metrics else (metrics or [metric])[0]
        s = series(cat, amp, metric, vs, image_type=image_type)
        return metrics, cat.image_types(), s
