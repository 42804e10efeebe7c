"""The viewer's main window: the controller between the data (loader, cache, statistics), the
display model (``DisplaySettings`` and the transfers built from it) and the view.

Redraw stages (ginga's ``whence``), each restarting only what changed:

1. data: tiles arrive from the loader (already stretched with the current transfers);
2. stretch and limits: new transfers (``cpu`` pool) then re-stretched index images (``cpu``
   pool) from the float tiles already in memory: no read;
3. colour map: one 256-entry table swapped on every item;
4. overlays: scene items of their own.

The GUI thread only decides, places items and swaps images; every read, decompression,
statistic and stretch runs on the workers (``cvt.viewer.loader``).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QToolBar,
    QWidget,
)

from core.exposure import list_exposures, open_exposure
from cvt.display import (
    COLORMAPS,
    LIMIT_MODES,
    SAMPLE_SIZE,
    SCOPES,
    STRETCHES,
    DisplaySettings,
    apply_rects,
    argb_lut,
    build_transfers,
    colormap,
    colourise,
    histogram,
    merge_samples,
    sorted_sample,
    warm_up,
)
from cvt.viewer import health as health_mod
from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)
from cvt.viewer.follow import FollowControls
from cvt.viewer.loader import TaskRunner, TileLoader, will_retry
from cvt.viewer.overlays import LabelLayer, OutlineLayer, RectLayer, outline_geometry
from cvt.viewer.overscan import OverscanDock
from cvt.viewer.panels import ColourBar, HeaderPanel, HealthPanel, HistogramPanel
from cvt.viewer.skyinfo import sky_of, sky_text
from cvt.viewer.stats import EMPTY, LevelSamples, table_for
from cvt.viewer.summary import SummaryPanel, summary_lines
from cvt.viewer.tiles import (
    OVERVIEW,
    Layout,
    Tile,
    TileCache,
    TileKey,
    build_layout,
    describe_error,
)
from cvt.viewer.trendpanel import TrendControls
from cvt.viewer.view import FocalPlaneView

DEFAULT_TILE_BUDGET_MB = int(os.environ.get("CVT_TILE_BUDGET_MB", "512"))
Z_OVERVIEW_BACKGROUND = -300
Z_OVERVIEW = -200
Z_DETECTOR = -50
Z_ABSENT = 50
Z_HEAT = 60
Z_OUTLINE = 70
Z_HEALTH = 80
Z_SOURCES = 90
Z_LABEL = 95
Z_HIGHLIGHT = 99
RESTRETCH_BATCH = 6
TABLE_DEBOUNCE_MS = 40  # statistics that change are gathered this long before a rebuild
TABLE_INTERVAL_MS = 200  # a level's transfers are rebuilt at most this often while tiles stream
SOURCES_MAX_PX = 4.0  # sources are drawn when a screen pixel is at most this many data pixels
HEAT_CMAP = "plasma"
GIL_SWITCH_S = 0.0005
HEALTH_OUTLINES = {"fail": (230, 40, 40, 255), "warning": (255, 170, 0, 255)}
ABSENT_FILL = (255, 90, 90, 90)  # hatched: a detector not in the exposure, a tile with no data
UNREADABLE_FILL = (255, 200, 0, 150)  # hatched: a detector the exposure lists but cannot read
UNREADABLE_TEXT = QColor(255, 210, 60)


_heap_frozen = False


def freeze_heap() -> None:
    """Move every object alive now (modules, Qt wrappers, the exposure's metadata: some 300 000
    of them) out of the garbage collector's sight, at each open. A full collection walks every
    tracked object while holding the interpreter lock, whichever thread triggers it; with these
    in sight it took 60-260 ms, a GUI stall each time it came. Frozen objects are still freed
    when their last reference goes, but a reference cycle among them would never be collected:
    so from the second open on, the heap is thawed and collected once first (one pause when
    another exposure is opened, instead of one every few hundred tiles; nothing leaks)."""
    global _heap_frozen
    if _heap_frozen:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    _heap_frozen = True


_warm = False


def warm_start() -> None:
    """Once, before the first window shows: what would otherwise first run on a worker while
    the first frame is drawn, holding the interpreter lock: loading the display kernels
    (numba's cache, ~0.4 s), importing zarr-python (the store's reader, ~0.2 s: the ingest
    side of ``core`` does without it) and astropy (the sky position's header parsing, ~0.5
    s)."""
    global _warm
    if _warm:
        return
    _warm = True
    warm_up()
    from core import lazyzarr  # noqa: F401

    with contextlib.suppress(ImportError):  # without it, the sky readout says why it has none
        import astropy.io.fits  # noqa: F401


def freeze_startup() -> None:
    """Before the first open: the modules and Qt objects alive since start-up (parsing the
    exposure's metadata otherwise set off a 50-90 ms full collection of them)."""
    if not _heap_frozen and not gc.get_freeze_count():
        gc.freeze()


def _open(url: str):
    """Worker: open the exposure and work out its layout (metadata only) and the geometry of
    its raft, CCD and amp outlines."""
    exposure = open_exposure(url)
    camera = None
    try:
        from core.camera import load_camera

        camera = load_camera(str(exposure.attrs.get("camera") or ""))
    except (ValueError, KeyError, OSError):
        camera = None
    layout, images = build_layout(exposure, camera)
    outlines = {
        "rafts": outline_geometry([r for _, r in layout.rafts]),
        "ccds": outline_geometry(
            [d.bounds for d in layout.detectors] + [r for _, r in layout.absent + layout.unreadable]
        ),
        "amps": outline_geometry(layout.amp_boxes),
    }
    return exposure, layout, images, outlines


def _assemble_level(layout: Layout, level: int, tiles: dict) -> np.ndarray:
    src = layout.overview
    ny, nx = src.level_shapes[level]
    img = np.full((ny, nx), np.nan, dtype=np.float32)
    for key, tile in tiles.items():
        if key.level == level and tile.data is not None:
            r0, r1, c0, c1 = src.tile_slices(level, key.ty, key.tx)
            img[r0:r1, c0:c1] = tile.data
    return img


def _stats(layout: Layout, level: int, tiles: dict):
    """Worker: per-amp samples of a whole overview level."""
    img = _assemble_level(layout, level, tiles)
    return level, layout.amp_samples(img, level, SAMPLE_SIZE)


def _preview_table(generation: int, settings: DisplaySettings, data: np.ndarray, n_amps: int):
    """Worker: a global stretch from one tile (the coarsest overview), for the first frame."""
    samples = [sorted_sample(data, SAMPLE_SIZE)] + [EMPTY] * (n_amps - 1)
    return _build_table(generation, settings.with_(scope="global"), samples, np.zeros(n_amps))


def _build_table(generation: int, settings: DisplaySettings, samples, amp_det, previous=None):
    """Worker: the transfers of one level, and the histogram of its data for the panel."""
    merged = merge_samples(samples)
    transfers = build_transfers(
        generation, settings, samples, amp_det, previous=previous, global_sample=merged
    )
    lo, hi = transfers.limits()
    if merged.size:
        a, b = float(merged[0]), float(merged[-1])
        a, b = min(a, lo), max(b, hi)
        pad = 0.02 * ((b - a) or 1.0)
        hist = histogram(merged, 200, (a - pad, b + pad))
    else:
        hist = histogram(merged, 200)
    return transfers, hist


def _redraw(jobs, layout: Layout, colour) -> list:
    """Worker: the stretch and colour stages of tiles already in memory (no read): a new index
    image where the transfers changed, and the colour image from the index."""
    version, lut = colour
    out = []
    for t, table in jobs:
        if t.index is None or t.generation != table.generation:
            index, generation = apply_rects(t.data, layout.rects(t.key), table), table.generation
        else:
            index, generation = t.index, t.generation
        out.append((t, index, generation, colourise(index, lut), version))
    return out


class ViewerWindow(QMainWindow):
    """``cvt view``: the whole focal plane, down to single pixels."""

    opened = Signal(object)  # the Exposure
    open_failed = Signal(str)
    first_frame = Signal(float)  # seconds from open() to the whole plane on screen
    settled = Signal()  # every needed tile is in and drawn with the current stretch
    health_done = Signal(object)
    tables_loaded = Signal()
    settings_changed = Signal(object)  # the new DisplaySettings
    status_changed = Signal(str)  # the hover readout
    damage_changed = Signal(str)  # what is failing or unreadable, as the status bar says it
    summary_changed = Signal()  # the exposure summary's rows changed

    def __init__(
        self,
        *,
        tile_budget_mb: int = DEFAULT_TILE_BUDGET_MB,
        io_threads: int = 4,
        cpu_threads: int | None = None,
        animate: bool = True,
        embedded: bool = False,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.embedded = embedded  # a pane of another window (the compare view): no chrome
        # worker threads run Python too: hand the interpreter lock back to the GUI thread
        # within a millisecond, not the default five, so that a frame never queues behind them
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        warm_start()
        self.setWindowTitle("CVT")
        self.settings = DisplaySettings()
        self.runner = TaskRunner(io_threads, cpu_threads, self)
        self.cache = TileCache(tile_budget_mb * 1024 * 1024)
        self.loader = TileLoader(self.runner, self.cache, self)
        self.loader.set_colour(0, argb_lut(self.settings.cmap))
        self.view = FocalPlaneView(self)
        if not animate:
            self.view.fly_duration_ms = 0
        self.setCentralWidget(self.view)
        # state of the open exposure
        self.url: str | None = None
        self.exposure = None
        self.layout: Layout | None = None
        self.images: dict = {}
        self.resident: dict[TileKey, Tile] = {}
        self.levels_done: set[int] = set()
        self.level_samples: dict[tuple[str, int], LevelSamples] = {}
        self.tables: dict[tuple[str, int], object] = {}  # (domain, level) -> Transfers
        self._table_counter = 0
        self._settings_version = 0
        self._dirty_tables: set[tuple[str, int]] = set()
        self._table_jobs = 0
        self._table_building: dict[tuple[str, int], int] = defaultdict(int)  # builds in flight
        self._table_started: dict[tuple[str, int], float] = {}  # when the last build started
        self._stretch_jobs = 0
        self._colour_version = 0
        self.lut = argb_lut(self.settings.cmap)
        self._stats_jobs = 0
        self._restretch_pending: dict[TileKey, Tile] = {}
        self._wanted: list[TileKey] = []
        self._wanted_set: set[TileKey] = set()
        self._absent_tiles: dict[TileKey, Tile] = {}
        self._absent_drawn: frozenset | None = None
        self._ov_keep: set[TileKey] = set()
        self._t_open = 0.0
        self._first_frame_at: float | None = None
        self._settled_emitted = False
        self._opening = False
        self.sky = None  # (BoresightWcs or None, why not) of the exposure, once known
        self._open_seq = 0
        self._keep_view = None
        self.metrics: dict = {}
        self.heat_metric: str | None = None  # the heat map's metric as chosen (kept across opens)
        self.sources: dict = {}
        self._source_xy = None
        self._sources_shown = False
        self._sources_cover = None  # (positions, the rect whose sources are drawn)
        self.health_rows: list[dict] = []
        self.health_counts: dict | None = None
        self.problems: dict[str, str] = {}  # what of the exposure cannot be read -> why
        self.corrupt: dict[TileKey, str] = {}  # chunks read whole that do not decode -> why
        self._tables_pending = False  # the metrics and sources tables are being read
        self._pixel_busy = False
        self._pixel_next = None
        self.hists: dict = {}
        self._hist_shown = None
        self._hover_loc = None
        self._header_busy = False
        self._header_next: str | None = None
        self._closing = False
        self.status_text = ""
        self.damage_text = ""
        self._build_overlays()
        self._build_ui()
        self._restretch_timer = QTimer(self, singleShot=True, interval=0)
        self._restretch_timer.timeout.connect(self._flush_restretch)
        self._tables_timer = QTimer(self, singleShot=True, interval=TABLE_DEBOUNCE_MS)
        self._tables_timer.timeout.connect(self._flush_tables)
        self._settle_timer = QTimer(self, singleShot=True, interval=0)
        self._settle_timer.timeout.connect(self._check_settled)
        self.view.view_changed.connect(self._refresh)
        self.view.fly_finished.connect(self._schedule_settle_check)
        self.view.hovered.connect(self._hover)
        self.view.left.connect(lambda: self._set_status(""))
        self.loader.tile_loaded.connect(self._on_tile)
        self.loader.tile_read.connect(self._on_tile_read)
        self.loader.resident_loaded.connect(self._on_resident)
        self.compare = None
        if embedded:
            self._strip_chrome()
        else:
            from cvt.viewer.compare import CompareController

            self.compare = CompareController(self)
            self.resize(1200, 900)

    def _strip_chrome(self) -> None:
        """A pane inside another window: the view alone; that window's controls drive it."""
        self.setWindowFlags(Qt.WindowType.Widget)
        for tb in self.findChildren(QToolBar):
            tb.hide()
        docks = (self.hist_dock, self.health_dock, self.header_dock, self.summary_dock)
        for dock in (*docks, self.overscan.dock):
            dock.hide()
        self.menuBar().hide()
        self.statusBar().hide()
        # a pane's window-wide shortcuts would clash with the outer window's own
        self.removeAction(self.overscan.action)

    # ------------------------------------------------------------------ UI

    def _build_ui(self) -> None:
        self.summary_panel = SummaryPanel(self)
        self.summary_dock = self._dock(
            "Exposure summary", self.summary_panel, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.summary_dock.hide()
        tb = QToolBar("view", self)
        tb.setObjectName("view-toolbar")
        self.addToolBar(tb)
        act_open = QAction("Open…", self)
        act_open.setShortcut(QKeySequence.StandardKey.Open)
        act_open.triggered.connect(self._open_dialog)
        tb.addAction(act_open)
        for text, step, key in (
            ("◀", -1, "Ctrl+Left"),
            ("▶", 1, "Ctrl+Right"),
            ("latest", 0, "Ctrl+L"),
        ):
            act = QAction(text, self)
            act.setToolTip(
                {-1: "previous exposure", 1: "next exposure", 0: "latest exposure"}[step]
                + " in this repository"
            )
            act.setShortcut(QKeySequence(key))
            act.triggered.connect(lambda _=False, step=step: self.navigate(step))
            tb.addAction(act)
        self.summary_action = self.summary_dock.toggleViewAction()
        self.summary_action.setText("summary")
        self.summary_action.setToolTip(
            "the exposure's summary: what it is, what is missing or failed"
        )
        tb.addAction(self.summary_action)
        self.follow_controls = FollowControls(self, tb)
        self.follower = self.follow_controls.follower
        act_fit = QAction("Fit", self)
        act_fit.triggered.connect(lambda: self.view.fit(animate=True))
        tb.addAction(act_fit)
        self.goto_edit = QLineEdit(self)
        self.goto_edit.setPlaceholderText("go to R22_S11 or R22_S11_C07")
        self.goto_edit.setMaximumWidth(200)
        self.goto_edit.returnPressed.connect(lambda: self.goto(self.goto_edit.text()))
        tb.addWidget(self.goto_edit)
        tb.addSeparator()
        tb.addWidget(QLabel(" metric ", self))
        self.metric_box = QComboBox(self)
        self.metric_box.addItem("(none)")
        # as wide as a usual metric's name, not the longest: the toolbar must hold it
        self.metric_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.metric_box.setMinimumContentsLength(14)
        self.metric_box.currentTextChanged.connect(self._metric_chosen)
        tb.addWidget(self.metric_box)
        # the heat map's colour bar, in the view's corner: always in sight and in every
        # picture taken
        self.colour_bar = ColourBar(self.view)
        self.view.set_corner_widget(self.colour_bar)
        self.colour_bar.setVisible(False)
        tb.addSeparator()
        self.health_action = QAction("Health check", self)
        self.health_action.triggered.connect(self.run_health)
        tb.addAction(self.health_action)
        # the display controls on a second row: on one, a window 900 px wide put the metric
        # box and the health check into the toolbar's overflow menu
        self.addToolBarBreak()
        tb = QToolBar("display", self)
        tb.setObjectName("display-toolbar")
        self.addToolBar(tb)
        self.stretch_box = self._combo(tb, "stretch", STRETCHES, self.settings.stretch, "stretch")
        self.limits_box = self._combo(tb, "limits", LIMIT_MODES, self.settings.limits, "limits")
        self.scope_box = self._combo(tb, "per", SCOPES, self.settings.scope, "scope")
        self.cmap_box = self._combo(tb, "colours", COLORMAPS, self.settings.cmap, "cmap")
        tb.addSeparator()
        self.outlines_check = QCheckBox("outlines", self)
        self.outlines_check.setChecked(True)
        self.outlines_check.toggled.connect(self.set_outlines_visible)
        tb.addWidget(self.outlines_check)
        self.labels_check = QCheckBox("labels", self)
        self.labels_check.setChecked(True)
        self.labels_check.toggled.connect(self.set_labels_visible)
        tb.addWidget(self.labels_check)
        self.sources_check = QCheckBox("sources", self)
        self.sources_check.setChecked(True)
        self.sources_check.toggled.connect(lambda _: self._update_sources())
        tb.addWidget(self.sources_check)
        self.health_marks_check = QCheckBox("health marks", self)
        self.health_marks_check.setToolTip("the health check's marks on failing and warning amps")
        self.health_marks_check.setChecked(True)
        self.health_marks_check.toggled.connect(lambda on: self.health_layer.setVisible(on))
        tb.addWidget(self.health_marks_check)

        self.histogram = HistogramPanel(self)
        self.histogram.limits_dragged.connect(
            lambda lo, hi: self.set_settings(limits="manual", manual=(lo, hi))
        )
        self.hist_dock = self._dock(
            "Histogram", self.histogram, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.health_panel = HealthPanel(self)
        self.health_panel.amp_clicked.connect(self.fly_to_amp)
        self.health_dock = self._dock(
            "Health", self.health_panel, Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.health_dock.hide()
        self.header_panel = HeaderPanel(self)
        self.header_dock = self._dock(
            "FITS header", self.header_panel, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.header_dock.hide()
        self.header_dock.visibilityChanged.connect(lambda _: self._request_header())
        self.trend = TrendControls(self)
        self.hover_label = QLabel("", self)
        self.hover_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress_label = QLabel("", self)
        self.statusBar().addWidget(self.hover_label, 1)
        self.statusBar().addPermanentWidget(self.progress_label)
        self.overscan = OverscanDock(self)
        menu = self.menuBar().addMenu("&View")
        menu.addAction(self.summary_action)
        menu.addAction(self.hist_dock.toggleViewAction())
        menu.addAction(self.health_dock.toggleViewAction())
        menu.addAction(self.header_dock.toggleViewAction())
        menu.addAction(self.overscan.action)
        menu.addAction(self.trend.dock.toggleViewAction())
        file_menu = self.menuBar().addMenu("&File")
        self.file_menu = file_menu
        act_open_menu = QAction("Open exposure…", self)
        act_open_menu.triggered.connect(self._open_dialog)
        file_menu.addAction(act_open_menu)
        act_url = QAction("Open URL…", self)
        act_url.setShortcut(QKeySequence("Ctrl+U"))
        act_url.triggered.connect(self._open_url_dialog)
        file_menu.addAction(act_url)
        act_repo = QAction("Open repository…", self)
        act_repo.setToolTip("the latest exposure of a repository; then ◀ ▶ step through it")
        act_repo.setShortcut(QKeySequence("Ctrl+Shift+R"))
        act_repo.triggered.connect(self._open_repository_dialog)
        file_menu.addAction(act_repo)
        file_menu.addSeparator()
        act_png = QAction("Export view as PNG…", self)
        act_png.triggered.connect(self._export_dialog)
        file_menu.addAction(act_png)
        self.progress_label.setText(
            "no exposure: File → Open exposure…, Open URL… or Open repository…"
        )

    def _combo(self, tb: QToolBar, label: str, items, current: str, field: str) -> QComboBox:
        tb.addWidget(QLabel(f" {label} ", self))
        box = QComboBox(self)
        box.addItems(list(items))
        box.setCurrentText(current)
        box.currentTextChanged.connect(lambda text: self.set_settings(**{field: text}))
        tb.addWidget(box)
        return box

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_overlays(self) -> None:
        vb = self.view.vb
        self.raft_outlines = OutlineLayer(QColor(120, 180, 255, 200), 1.5)
        self.ccd_outlines = OutlineLayer(QColor(120, 180, 255, 120), 1.0)
        self.amp_outlines = OutlineLayer(QColor(200, 200, 200, 90), 1.0, min_screen_px=25)
        self.labels = LabelLayer()
        self.chunk_labels = LabelLayer(QColor(255, 150, 150, 230))  # why a tile has no data
        self.absent_layer = RectLayer(opacity=0.8)
        self.absent_layer.fill_style = Qt.BrushStyle.BDiagPattern
        self.heat_layer = RectLayer(opacity=0.75)
        self.health_layer = RectLayer(outline_width=2.5)
        self.highlight = RectLayer(outline_width=4.0)
        import pyqtgraph as pg

        self.sources_item = pg.ScatterPlotItem(
            size=14, pen=pg.mkPen(0, 255, 120, 220, width=1.5), brush=None, symbol="o", pxMode=True
        )
        for item, z in (
            (self.absent_layer, Z_ABSENT),
            (self.heat_layer, Z_HEAT),
            (self.raft_outlines, Z_OUTLINE + 2),
            (self.ccd_outlines, Z_OUTLINE + 1),
            (self.amp_outlines, Z_OUTLINE),
            (self.health_layer, Z_HEALTH),
            (self.sources_item, Z_SOURCES),
            (self.labels, Z_LABEL),
            (self.chunk_labels, Z_LABEL),
            (self.highlight, Z_HIGHLIGHT),
        ):
            item.setZValue(z)
            vb.addItem(item, ignoreBounds=True)

    # ------------------------------------------------------------------ opening

    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open an exposure (.zarr)")
        if path:
            self.open(path)

    def _open_url_dialog(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        url, ok = QInputDialog.getText(
            self, "Open", "exposure path or URL (http://host:port/OBSID.zarr, s3://...):"
        )
        if ok and url.strip():
            self.open(url.strip())

    def _open_repository_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a repository (folder of .zarr)")
        if path:
            self.open_repository(path)

    def open_repository(self, repo: str | os.PathLike) -> None:
        """Open the latest exposure of a repository (folder or URL), listed on a worker."""
        repo = os.fspath(repo)
        self.progress_label.setText(f"listing {repo}")
        self.runner.submit(
            "io",
            list_exposures,
            repo,
            on_done=lambda names: self._open_latest(repo, names),
            on_error=lambda e: self._repository_error(f"cannot list {repo}: {e}"),
        )

    def _open_latest(self, repo: str, names: list[str]) -> None:
        if not names:
            self._repository_error(f"no exposures in {repo}")
            return
        self.open(join_repository(repo, names[-1]))

    def _repository_error(self, msg: str) -> None:
        self.progress_label.setText(msg)
        self.statusBar().showMessage(msg, 10000)
        self.open_failed.emit(msg)

    def open(self, url: str | os.PathLike, keep_view: bool = False) -> None:
        """Open an exposure (path or URL); returns at once, the work is on a worker. With
        ``keep_view`` the view stays where it is (the same exposure again, grown). ``url``
        becomes the window's once the exposure is shown (an open that fails leaves it alone)."""
        url = os.fspath(url)
        self._t_open = time.perf_counter()
        self._first_frame_at = None
        self._settled_emitted = False
        self._opening = True
        freeze_startup()
        self._open_seq += 1
        self._keep_view = self.view.view_rect() if keep_view and self.layout is not None else None
        # no automatic collection while the metadata is parsed (hundreds of thousands of new
        # objects, a 25-40 ms collection on the io thread each time the threshold came round):
        # they are frozen unscanned once the layout is in, and collections resume then
        gc.disable()
        self.progress_label.setText(f"opening {url}")
        seq = self._open_seq
        self.runner.submit(
            "io",
            _open,
            url,
            on_done=lambda res: self._on_opened(res, url) if seq == self._open_seq else None,
            on_error=lambda e: self._on_open_error(e) if seq == self._open_seq else None,
        )

    def follow(self, repo: str | os.PathLike | None = None) -> bool:
        """Follow a repository (default: this exposure's): each newly published exposure is
        opened as it arrives (``cvt.viewer.follow``)."""
        return self.follow_controls.follow(None if repo is None else os.fspath(repo))

    def show_trend(self, amp: str) -> None:
        """The "Trend" dock for ``amp`` (``R22_S11_C07``) across this repository's catalog."""
        self.trend.show_amp(amp)

    def set_follow_paused(self, paused: bool) -> None:
        self.follow_controls.set_paused(paused)

    def _on_open_error(self, exc: BaseException) -> None:
        self._opening = False
        gc.enable()
        msg = str(exc) or exc.__class__.__name__
        self.progress_label.setText(f"cannot open: {msg}")
        self.open_failed.emit(msg)

    def _if_shown(self, exposure, handle):
        """``handle`` for a result about ``exposure``, dropped if another one is shown by then
        (not merely asked for: an open that fails leaves this one on screen)."""
        return lambda res: handle(res) if self.exposure is exposure else None

    def _on_opened(self, result, url: str) -> None:
        exposure, layout, images, outlines = result
        self.url = url
        self._opening = False
        self.exposure, self.layout, self.images = exposure, layout, images
        self.loader.reset(exposure, images, layout)
        self.resident.clear()
        self.levels_done.clear()
        self.level_samples.clear()
        self.tables.clear()
        self._dirty_tables.clear()
        self._absent_tiles.clear()
        self._absent_drawn = None
        self._ov_keep = set()
        self._restretch_pending.clear()
        self._wanted, self._wanted_set = [], set()
        self.view.clear_tiles()
        self.setWindowTitle(f"CVT — {exposure.obsid}")
        self.metrics, self.sources, self._source_xy = {}, {}, None
        self.problems = dict(layout.problems)
        self.corrupt = {}
        self._update_sources()
        self._static_overlays(outlines)
        self._update_summary()
        self.view.set_extent(layout.bounds)
        if self._keep_view is not None:
            self.view.set_rect(self._keep_view)
        else:
            self.view.fit(animate=False)
        self._keep_view = None
        if layout.overview is not None:
            ov = layout.overview
            coarsest = ov.n_levels - 1
            self.loader.load_resident(ov.keys(coarsest), first=True)
            for level in range(coarsest - 1, -1, -1):
                self.loader.load_resident(ov.keys(level))
        self._tables_pending = True
        self.runner.submit(
            "io",
            _read_tables,
            exposure,
            on_done=self._if_shown(exposure, self._on_tables),
            on_error=self._if_shown(
                exposure,
                lambda e: self._on_tables(({}, {}, None, {"metrics and sources": describe_error(e)})),
            ),
        )
        self.sky = None
        self.runner.submit(
            "io",
            sky_of,
            exposure,
            images,
            on_done=self._if_shown(exposure, self._on_sky),
            on_error=self._if_shown(
                exposure, lambda e: self._on_sky((None, f"header unreadable: {e}"))
            ),
        )
        self.follow_controls.opened(self.url, exposure)
        self.trend.opened(exposure)
        self.opened.emit(exposure)
        self._refresh()
        self.overscan.reset()
        freeze_heap()
        gc.enable()

    def _on_sky(self, sky) -> None:
        self.sky = sky
        loc = self._hover_loc
        if loc is not None and self.status_text:
            self._set_status(self._hover_text(loc))

    def navigate(self, step: int) -> None:
        """Open the previous (-1), next (+1) or latest (0) exposure of the same repository
        (``core.exposure.list_exposures``, on a worker)."""
        if not self.url:
            return
        if step != 0 and self.follower.active and not self.follower.paused:
            # stepping back to look at an earlier exposure: the next arrival must not take the
            # view away from it (Ctrl+F resumes, and jumps to the newest)
            self.follow_controls.set_paused(True)
            self.statusBar().showMessage("following paused; Ctrl+F resumes", 5000)
        repo, name = split_repository(self.url)
        self.runner.submit(
            "io",
            list_exposures,
            repo,
            on_done=lambda names: self._navigate_to(repo, name, names, step),
            on_error=lambda e: self.statusBar().showMessage(f"cannot list {repo}: {e}", 5000),
        )

    def _navigate_to(self, repo: str, name: str, names: list[str], step: int) -> None:
        if not names:
            return
        if step == 0:
            target = names[-1]
        elif name in names:
            i = names.index(name) + step
            if not 0 <= i < len(names):
                self.statusBar().showMessage("no more exposures that way", 3000)
                return
            target = names[i]
        else:
            target = names[-1]
        if target != name:
            self.open(join_repository(repo, target))

    # ------------------------------------------------------------------ stats and stretch

    def _on_resident(self, tile: Tile) -> None:
        if will_retry(tile):  # the loader tries it again; the level is not complete
            self._update_progress()
            return
        if tile.corrupt:  # final: the level completes without it, drawn hatched
            self._note_corrupt(tile)
        self.resident[tile.key] = tile
        ov = self.layout.overview
        level = tile.key.level
        nty, ntx = ov.grid(level)
        if level == ov.n_levels - 1 and ("ov", level) not in self.tables and tile.data is not None:
            # the first frame: a global stretch of the coarsest overview while the per-amp
            # statistics are worked out (submitted first: the first frame waits for it)
            self._table_counter += 1
            self._table_jobs += 1
            self.runner.submit(
                "cpu",
                _preview_table,
                self._table_counter,
                self.settings,
                tile.data,
                len(self.layout.amp_names),
                on_done=lambda res, key=("ov", level), sv=self._settings_version: self._on_table(
                    key, sv, res
                ),
            )
        if sum(1 for k in self.resident if k.level == level) == nty * ntx:
            self.levels_done.add(level)
            self._stats_jobs += 1
            tiles = {k: t for k, t in self.resident.items() if k.level == level}
            self.runner.submit("cpu", _stats, self.layout, level, tiles, on_done=self._on_stats)
        self._sync_overview()
        self._schedule_settle_check()

    def _on_stats(self, result) -> None:
        """A whole overview level's statistics: its transfers, built at once."""
        self._stats_jobs -= 1
        level, samples = result
        self.level_samples[("ov", level)] = LevelSamples.complete(samples)
        self._dirty_tables.add(("ov", level))
        self._flush_tables(force=True)
        self._schedule_settle_check()  # the flush may start nothing: this was the last job

    def _on_tile_read(self, tile: Tile) -> None:
        """Every detector tile read adds to its level's per-amp statistics until they freeze."""
        if tile.corrupt and self.layout is not None:
            self._note_corrupt(tile)
        if not tile.samples or self.layout is None:
            return
        key = ("det", tile.key.level)
        ls = self.level_samples.get(key)
        if ls is None:
            ls = self.level_samples[key] = LevelSamples(len(self.layout.amp_names))
        changed = False
        for amp, sample in tile.samples.items():
            changed |= ls.add(amp, sample)
        if changed:
            self._dirty_tables.add(key)
            if not self._tables_timer.isActive():
                self._tables_timer.start(TABLE_DEBOUNCE_MS)

    def _needed_tables(self) -> set[tuple[str, int]]:
        """The levels whose transfers the view uses now (the others are built when used)."""
        needed = {("det", k.level) for k in self._wanted}
        ov = self.layout.overview if self.layout is not None else None
        if ov is not None:
            needed.add(("ov", ov.n_levels - 1))
            needed.add(("ov", ov.level_for(self.view.pixel_size())))
        return needed

    def _flush_tables(self, force: bool = False) -> None:
        """Build the transfers of the levels in use whose statistics or settings changed
        (workers), detector levels first. While tiles stream in, a level that has transfers
        is rebuilt at most every ``TABLE_INTERVAL_MS`` and never while a build of it is still
        running (each build re-stretches what is on screen); ``force``: now (new settings,
        a whole overview level's statistics)."""
        if self.layout is None or not self._dirty_tables:
            return
        self._tables_timer.stop()
        todo = self._dirty_tables & self._needed_tables()
        now = time.perf_counter()
        wait_ms = None
        if not force:
            for key in list(todo):
                if key not in self.tables:
                    continue  # the first transfers of a level: at once
                due = self._table_started.get(key, -1e9) + TABLE_INTERVAL_MS / 1e3
                if self._table_building[key] or now < due:
                    todo.discard(key)
                    left = max(0.0, due - now) * 1e3
                    wait_ms = left if wait_ms is None else min(wait_ms, left)
        if wait_ms is not None:
            # left dirty: again when due (or, if a build is running, when it is in)
            self._tables_timer.start(max(1, int(wait_ms) + 1))
        self._dirty_tables -= todo
        for key in sorted(todo, key=lambda k: (k[0] == "ov", -k[1])):
            ls = self.level_samples.get(key)
            if ls is None or ls.empty:
                continue
            self._table_counter += 1
            self._table_jobs += 1
            self._table_building[key] += 1
            self._table_started[key] = now
            self.runner.submit(
                "cpu",
                _build_table,
                self._table_counter,
                self.settings,
                ls.snapshot(),
                self.layout.amp_det,
                self.tables.get(key),
                on_done=lambda res, key=key, sv=self._settings_version: self._on_table(
                    key, sv, res
                ),
            )

    def _on_table(self, key, settings_version: int, result) -> None:
        self._table_jobs -= 1
        self._table_building[key] = max(0, self._table_building[key] - 1)
        if key in self._dirty_tables and not self._tables_timer.isActive():
            self._tables_timer.start(TABLE_DEBOUNCE_MS)
        transfers, hist = result
        old = self.tables.get(key)
        if settings_version != self._settings_version or (
            old is not None and old.generation > transfers.generation
        ):
            self._schedule_settle_check()
            return
        self.tables[key] = transfers
        self.hists[key] = hist
        self.loader.set_tables(self.tables)
        self._update_histogram()
        # re-stretch what is drawn with out-of-date transfers: on screen first
        shown = self.view.shown()
        tiles = [self.view.shown_tile(k)[0] for k in shown]
        tiles += [self.cache.get(k) for k in self._wanted if k not in shown]
        tiles += [self.resident[k] for k in self._ov_keep if k not in shown and k in self.resident]
        for t in tiles:
            if t is None or t.data is None:
                continue
            table = table_for(t.key, self.tables)
            if table is not None and t.generation != table.generation:
                if not self._still_valid(t, table):
                    self._restretch_pending[t.key] = t
        if self._restretch_pending:
            self._restretch_timer.start()
        self._schedule_settle_check()

    def _still_valid(self, tile: Tile, table) -> bool:
        """Whether the tile's index image, made with older transfers, is what ``table`` would
        make (the rows of its amps were built from the very same samples): then it is only
        re-tagged, not stretched again."""
        if tile.index is None or tile.data is None or self.layout is None:
            return False
        rects = self.layout.rects(tile.key)
        covered = sum((r1 - r0) * (c1 - c0) for _, r0, r1, c0, c1 in rects)
        if not table.unchanged_for(tile.generation, rects, covered >= tile.data.size):
            return False
        tile.generation = table.generation
        self.view.retag_tile(tile)
        return True

    def _flush_restretch(self) -> None:
        """Send the tiles whose stretch or colours are out of date to the workers, those on
        screen first, in small batches (so the first of them come back quickly)."""
        if not self._restretch_pending:
            return
        shown = self.view.shown()
        tiles = sorted(
            self._restretch_pending.values(),
            key=lambda t: (t.key not in shown and t.key not in self._wanted_set, -t.key.level),
        )
        self._restretch_pending.clear()
        first = [t for t in tiles if t.key in shown or t.key in self._wanted_set]
        rest = tiles[len(first) :]
        if not first and rest:  # the first frame: the coarsest overview on its own
            first, rest = rest[:1], rest[1:]
        batches = [first[i : i + 2] for i in range(0, len(first), 2)]
        batches += [rest[i : i + RESTRETCH_BATCH] for i in range(0, len(rest), RESTRETCH_BATCH)]
        colour = (self._colour_version, self.lut)
        for batch in batches:
            jobs = [(t, table_for(t.key, self.tables)) for t in batch]
            jobs = [(t, tab) for t, tab in jobs if tab is not None and t.data is not None]
            if not jobs:
                continue
            self._stretch_jobs += 1
            self.runner.submit(
                "draw", _redraw, jobs, self.layout, colour, on_done=self._on_restretched
            )

    def _on_restretched(self, results) -> None:
        self._stretch_jobs -= 1
        for tile, index, generation, argb, colour in results:
            table = table_for(tile.key, self.tables)
            if table is None or table.generation != generation or colour != self._colour_version:
                # the statistics, stretch or colours changed meanwhile: again, if still needed
                if tile.key in self._wanted_set or tile.key in self.resident:
                    self._restretch_pending[tile.key] = tile
                    self._restretch_timer.start()
                continue
            old = tile.nbytes
            tile.index, tile.generation, tile.argb, tile.colour = index, generation, argb, colour
            if tile.key.source != OVERVIEW:
                self.cache.resized(tile, old)
            self._display(tile)
        self._sync_overview()
        self._schedule_settle_check()

    def set_settings(self, **changes) -> None:
        """Change the display model; redraw from the earliest stage the change touches."""
        new = self.settings.with_(**changes)
        stage = new.stage_changed(self.settings)
        self.settings = new
        for box, value in (
            (self.stretch_box, new.stretch),
            (self.limits_box, new.limits),
            (self.scope_box, new.scope),
            (self.cmap_box, new.cmap),
        ):
            if box.currentText() != value:
                box.blockSignals(True)
                box.setCurrentText(value)
                box.blockSignals(False)
        if stage == "stretch":
            self._settings_version += 1
            self._settled_emitted = False
            self._dirty_tables |= set(self.level_samples)
            self._flush_tables(force=True)
        elif stage == "cmap":
            self._set_colour_map(new.cmap)
        self._schedule_settle_check()
        if stage is not None:
            self.settings_changed.emit(new)

    def _set_colour_map(self, name: str) -> None:
        """The colour stage: re-colour the index images in memory (workers); no read, no
        re-stretch."""
        self._colour_version += 1
        self._settled_emitted = False
        self.lut = argb_lut(name)
        self.loader.set_colour(self._colour_version, self.lut)
        shown = self.view.shown()
        tiles = [self.view.shown_tile(k)[0] for k in shown]
        tiles += [self.cache.get(k) for k in self._wanted if k not in shown]
        tiles += [self.resident[k] for k in self._ov_keep if k not in shown and k in self.resident]
        for t in tiles:
            if t is not None and t.index is not None:
                self._restretch_pending[t.key] = t
        self._restretch_timer.start()

    def _current_table_key(self) -> tuple[str, int] | None:
        """The statistics of what is drawn at this zoom (the finest data on screen)."""
        if self._wanted:
            key = ("det", self._wanted[0].level)
            if key in self.tables:
                return key
        if self.layout is not None and self.layout.overview is not None:
            key = ("ov", self.layout.overview.level_for(self.view.pixel_size()))
            if key in self.tables:
                return key
        return next(iter(self.tables), None)

    def _update_histogram(self) -> None:
        key = self._current_table_key()
        if key is None or key == self._hist_shown:
            return
        self._hist_shown = key
        transfers, (counts, edges) = self.tables[key], self.hists[key]
        lo, hi = transfers.limits()
        where = f"overview 1/{2 ** key[1] * 16}" if key[0] == "ov" else f"detectors 1/{2 ** key[1]}"
        self.histogram.set_histogram(
            counts,
            edges,
            f"{where}: {self.settings.stretch}, {self.settings.limits} per {self.settings.scope}; "
            f"global limits {lo:.5g} .. {hi:.5g}",
        )
        self.histogram.set_limits(lo, hi)

    # ------------------------------------------------------------------ what is on screen

    def _refresh(self) -> None:
        """The view moved: choose levels, request tiles, place what is already in memory."""
        if self.layout is None:
            return
        self._settled_emitted = False
        rect = self.view.view_rect()
        px = self.view.pixel_size()
        layout = self.layout
        # the detectors
        wanted = layout.wanted(rect, px)
        if wanted != self._wanted:
            self._wanted, self._wanted_set = wanted, set(wanted)
            self.loader.request(wanted)
        for key in wanted:
            tile = self.cache.get(key)
            if tile is not None:
                self._display(tile)
        self._prune(rect, px)
        self._sync_overview()
        if self._dirty_tables & self._needed_tables():
            self._flush_tables()
        self._update_sources()
        self._update_progress()
        self._schedule_settle_check()

    def _sync_overview(self) -> None:
        """The overview under the detectors: the level for this zoom (over the coarsest level,
        always there), until every detector tile the view needs is drawn; then none, so that
        the gaps between CCDs are clean and nothing is drawn twice."""
        ov = self.layout.overview if self.layout is not None else None
        if ov is None:
            return
        px, rect = self.view.pixel_size(), self.view.view_rect()
        detail = self.layout.wants_detector_tiles(px)
        shown = self.view.shown()
        complete = (
            detail
            and bool(self._wanted)
            and all(k in shown or k in self._absent_tiles for k in self._wanted)
        )
        keep: set[TileKey] = set()
        if not complete:
            keep = set(ov.tiles_in(ov.level_for(px), _grow(rect, 0.25)))
            if not detail or any(k not in self.resident or k in self.corrupt for k in keep):
                keep |= set(ov.keys(ov.n_levels - 1))  # under what is not in, or corrupt
        self._ov_keep = keep
        gone = [k for k in self._absent_tiles if k.source == OVERVIEW and k not in keep]
        for key in gone:  # a corrupt overview tile is hatched only while it would be drawn
            del self._absent_tiles[key]
        if gone:
            self._update_absent()
        for key in shown:
            if key.source == OVERVIEW and key not in keep:
                self.view.hide_tile(key)
        for key in keep:
            tile = self.resident.get(key)
            if tile is not None and key not in shown:
                self._display(tile)

    def _prune(self, rect, px: float) -> None:
        """Hide detector tiles that are off screen, or whose replacements are all in."""
        layout = self.layout
        shown = self.view.shown()
        by_det: dict[str, list[TileKey]] = defaultdict(list)
        for k in self._wanted:
            by_det[k.source].append(k)
        complete = {
            det: all(k in shown or k in self._absent_tiles for k in keys)
            for det, keys in by_det.items()
        }
        view = _grow(rect, 0.1)
        for key in shown:
            if key.source == OVERVIEW or key in self._wanted_set:
                continue
            src = layout.sources.get(key.source)
            if (
                src is None
                or not layout.wants_detector_tiles(px)
                or not _intersects(src.tile_rect(key.level, key.ty, key.tx), view)
                or complete.get(key.source, True)
            ):
                self.view.hide_tile(key)
        for key in list(self._absent_tiles):
            if key.source != OVERVIEW and key not in self._wanted_set:
                del self._absent_tiles[key]
        self._update_absent()

    def _display(self, tile: Tile) -> None:
        """Show a tile if it belongs on screen now (re-stretching it first if needed)."""
        key = tile.key
        if key.source == OVERVIEW:
            if key not in self._ov_keep:
                return
        elif key not in self._wanted_set:
            return
        if tile.absent:
            self._absent_tiles[key] = tile
            self._update_absent()
            return
        if self._absent_tiles.pop(key, None) is not None:  # read at last, after failing
            self._update_absent()
        table = table_for(key, self.tables)
        if table is None:
            return
        if tile.generation != table.generation and tile.index is not None:
            self._still_valid(tile, table)
        if (
            tile.index is None
            or tile.generation != table.generation
            or tile.colour != self._colour_version
        ):
            self._restretch_pending[key] = tile
            self._restretch_timer.start()
            if tile.argb is None:
                return
        self._show(tile)

    def _show(self, tile: Tile) -> None:
        key = tile.key
        if key.source == OVERVIEW:
            ov = self.layout.overview
            rect = ov.tile_rect(*_kl(key))
            z = Z_OVERVIEW_BACKGROUND if key.level == ov.n_levels - 1 else Z_OVERVIEW - key.level
        else:
            rect = self.layout.sources[key.source].tile_rect(*_kl(key))
            z = Z_DETECTOR - key.level
        self.view.show_tile(tile, rect, z)
        if self._first_frame_at is None and (
            key.source == OVERVIEW or self.layout.overview is None
        ):
            self.view.viewport().repaint()
            self._first_frame_at = time.perf_counter() - self._t_open
            self.first_frame.emit(self._first_frame_at)

    def _on_tile(self, tile: Tile) -> None:
        self._display(tile)
        self._sync_overview()
        self._update_progress()
        self._schedule_settle_check()

    # ------------------------------------------------------------------ settling

    def _schedule_settle_check(self) -> None:
        if not self._settle_timer.isActive():
            self._settle_timer.start()

    def is_settled(self) -> bool:
        """Every tile the view needs is in and drawn with the current statistics and stretch."""
        if self.layout is None or self._opening or self.loader.busy or self._tables_pending:
            return False
        if self.loader.retry_pending:
            return False
        if self.view.flying or self.view.change_pending:
            return False
        if self._stretch_jobs or self._stats_jobs or self._table_jobs:
            return False
        if self._restretch_pending or (self._dirty_tables & self._needed_tables()):
            return False
        ov = self.layout.overview
        if ov is not None and len(self.levels_done) < ov.n_levels:
            return False
        view = self.view.view_rect()
        keys = [k for k in self._wanted if k not in self._absent_tiles]
        keys += [
            k
            for k in self._ov_keep
            if k not in self.corrupt and _intersects(_tile_rect(self.layout, k), view)
        ]
        for key in keys:
            tile, generation, colour = self.view.shown_tile(key)
            table = table_for(key, self.tables)
            if tile is None or table is None or generation != table.generation:
                return False
            if colour != self._colour_version:
                return False
        return True

    def _check_settled(self) -> None:
        self._update_progress()
        if not self._settled_emitted and self.is_settled():
            self._settled_emitted = True
            self.settled.emit()

    def _update_progress(self) -> None:
        if self.layout is None:
            return
        n_wanted = len(self._wanted)
        shown = self.view.shown()
        have = sum(1 for k in self._wanted if k in shown or k in self._absent_tiles)
        self.progress_label.setText(
            f"level {self._level_text()}  tiles {have}/{n_wanted}  "
            f"queued {self.loader.queued}  cache {self.cache.nbytes / 2**20:.0f}/"
            f"{self.cache.budget / 2**20:.0f} MB"
        )
        note = "  —  ".join(n for n in (self.loader.failure_note(), self._damage_note()) if n)
        self.progress_label.setToolTip(note)
        if note:
            self.progress_label.setText(f"{self.progress_label.text()}  —  {note}")
        if note != self.damage_text:
            self.damage_text = note
            self.damage_changed.emit(note)

    def _note_corrupt(self, tile: Tile) -> None:
        """A chunk that cannot be decoded: named in the status bar and the summary, once."""
        key = tile.key
        if key in self.corrupt:
            return
        self.corrupt[key] = (tile.absent or "").removeprefix("read error: ")
        reasons = [why for k, why in sorted(self.corrupt.items()) if k.source == key.source]
        more = f"; {len(reasons) - 3} more" if len(reasons) > 3 else ""
        self.problems[f"{key.source} chunks"] = (
            f"{len(reasons)} corrupt, drawn hatched: {'; '.join(reasons[:3])}{more}"
        )
        self._update_summary()
        self._update_progress()

    def _damage_note(self) -> str:
        """For the status bar: what of the exposure cannot be read, and the CCDs the ingest
        could not take (the reasons are in the exposure summary)."""
        failed = [
            f for f in (self.exposure.attrs.get("failures") or []) if not f.get("detector_kept")
        ]
        parts = []
        if self.problems:
            parts.append(f"unreadable: {', '.join(self.problems)}")
        if failed:
            parts.append(f"{len(failed)} CCD{'s' if len(failed) != 1 else ''} failed at ingest")
        return f"{'; '.join(parts)} (View → Exposure summary)" if parts else ""

    def damage_lines(self) -> list[str]:
        """What of the open exposure could not be read, one line each with why (a scripted run
        ends with its picture all the same, and says these)."""
        lines = [f"{what}: {why}" for what, why in self.problems.items()]
        note = self.loader.failure_note()
        return [*lines, f"tiles: {note}"] if note else lines

    def summary_rows(self) -> list[tuple[str, str]]:
        """The exposure summary's (label, text) rows; none before an exposure is open."""
        if self.exposure is None:
            return []
        return summary_lines(self.exposure.attrs, self.problems, self.health_counts)

    def _update_summary(self) -> None:
        if self.compare is not None and self.compare.other is not None:
            self.compare.update_summary()  # A's and B's, as the panes show them
        elif self.exposure is not None:
            self.summary_panel.set_summary(self.summary_rows())
        self.summary_changed.emit()

    def _level_text(self) -> str:
        px = self.view.pixel_size()
        if self.layout.wants_detector_tiles(px):
            return f"1/{2 ** int(max(0, math.floor(math.log2(max(px, 1.0)))))}"
        ov = self.layout.overview
        return f"overview 1/{int(ov.scale(ov.level_for(px)))}"

    # ------------------------------------------------------------------ navigation

    def goto(self, text: str, animate: bool | None = None) -> bool:
        """Fly to ``R22_S11`` or ``R22_S11_C07``; False (and a message) if there is none."""
        if self.layout is None:
            return False
        found = self.layout.find(text)
        if found is None:
            self.statusBar().showMessage(f"no detector or amp {text!r} here", 5000)
            return False
        name, rect, amp = found
        self.view.fly_to(
            rect, animate=self.view.fly_duration_ms > 0 if animate is None else animate
        )
        self.highlight.set_rects([rect], outline=[(255, 255, 0, 255)])
        return True

    def fly_to_amp(self, detector: str, amp: str) -> None:
        self.goto(f"{detector}_{amp}")

    # ------------------------------------------------------------------ overlays

    def _static_overlays(self, outlines: dict) -> None:
        layout = self.layout
        self.raft_outlines.set_geometry(outlines["rafts"])
        self.ccd_outlines.set_geometry(outlines["ccds"])
        self.amp_outlines.set_geometry(outlines["amps"])
        self.labels.set_labels([(name, r) for name, r in layout.rafts], min_screen_px=40)
        self.labels.add_labels([(d.name.split("_")[1], d.bounds) for d in layout.detectors], 70)
        self.labels.add_labels(
            [(f"{n.split('_')[1]} absent", r, QColor(255, 120, 120)) for n, r in layout.absent], 70
        )
        self.labels.add_labels(
            [(f"{n.split('_')[1]} unreadable", r, UNREADABLE_TEXT) for n, r in layout.unreadable],
            70,
        )
        self.labels.add_labels(layout.amp_names, 45, boxes=layout.amp_boxes)
        self._update_absent()
        self.heat_layer.clear()
        self.colour_bar.setVisible(False)  # until this exposure's metrics are in
        self.health_layer.clear()
        self.highlight.clear()
        self.health_rows = []
        self.health_counts = None
        self.health_panel.set_rows([], "")

    def set_outlines_visible(self, on: bool) -> None:
        for item in (self.raft_outlines, self.ccd_outlines, self.amp_outlines):
            item.setVisible(on)

    def set_labels_visible(self, on: bool) -> None:
        for item in (self.labels, self.chunk_labels):
            item.setVisible(on)

    def _update_absent(self) -> None:
        """Absent detectors (the camera's, not in the exposure) and absent chunks."""
        if self.layout is None:
            return
        state = frozenset(self._absent_tiles)
        if state == self._absent_drawn:
            return
        self._absent_drawn = state
        boxes = [r for _, r in self.layout.unreadable + self.layout.absent]
        fills = [UNREADABLE_FILL] * len(self.layout.unreadable)
        fills += [ABSENT_FILL] * len(self.layout.absent)
        labels = []
        for key, tile in self._absent_tiles.items():
            boxes.append(_tile_rect(self.layout, key))
            fills.append(ABSENT_FILL)
            labels.append((_absent_label(tile), boxes[-1]))
        self.absent_layer.set_rects(boxes, fill=fills)
        self.chunk_labels.set_labels(labels, min_screen_px=90)

    def _on_tables(self, tables) -> None:
        metrics, sources, positions, errors = tables
        self._tables_pending = False
        self.metrics, self.sources, self._source_xy = metrics, sources, positions
        for name, why in errors.items():
            self.problems[f"{name} table"] = why
        names = metric_names(metrics)
        self.metric_box.blockSignals(True)
        self.metric_box.clear()
        self.metric_box.addItems(["(none)", *names])
        if self.heat_metric in names:  # the metric chosen for an earlier exposure, on this one
            self.metric_box.setCurrentText(self.heat_metric)
        self.metric_box.blockSignals(False)
        self._show_metric(self.heat_metric)
        self._update_sources()
        self._update_summary()
        self._update_progress()
        self._schedule_settle_check()
        self.tables_loaded.emit()

    def set_metric(self, name: str | None) -> None:
        self.metric_box.setCurrentText(name or "(none)")
        self._metric_chosen(name or "(none)")

    def _metric_chosen(self, name: str) -> None:
        """The user's choice: kept when another exposure is opened, and drawn again on it as
        soon as its metrics are in."""
        self.heat_metric = None if name in ("", "(none)") else name
        self._show_metric(self.heat_metric)

    def _show_metric(self, name: str | None) -> None:
        if self.layout is None or name is None or name not in self.metrics:
            self.heat_layer.clear()
            self.colour_bar.setVisible(False)
            return
        idx, values = metric_per_amp(self.layout, self.metrics, name)
        finite = np.isfinite(values)
        if not finite.any():
            self.heat_layer.clear()
            self.colour_bar.setVisible(False)
            return
        lo, hi = float(values[finite].min()), float(values[finite].max())
        rgb = heat_colours(values, lo, hi, HEAT_CMAP)
        boxes = [tuple(self.layout.amp_boxes[i]) for i in idx]
        fills = [(*c, 255) if ok else None for c, ok in zip(rgb, finite)]
        self.heat_layer.set_rects(boxes, fill=fills)
        self.colour_bar.set_colour_bar(HEAT_CMAP, lo, hi, name)
        self.colour_bar.setVisible(True)

    def _update_sources(self) -> None:
        """The detected sources in view, when zoomed in enough to tell them apart."""
        xy = self._source_xy
        show = (
            xy is not None
            and self.sources_check.isChecked()
            and self.layout is not None
            and self.view.pixel_size() <= SOURCES_MAX_PX
        )
        if not show:
            if self._sources_shown:
                self.sources_item.setData([], [])
                self._sources_shown = False
            return
        view = self.view.view_rect()
        cover = self._sources_cover
        if self._sources_shown and cover is not None and cover[0] is xy and _inside(view, cover[1]):
            return  # what is drawn covers the view still (setData costs 5-30 ms of Python)
        x0, y0, x1, y1 = cover = _grow(view, 0.5)
        x, y = xy
        i0, i1 = np.searchsorted(x, [x0, x1])
        ys = y[i0:i1]
        sel = np.flatnonzero((ys >= y0) & (ys <= y1))[:20000] + i0
        self.sources_item.setData(x[sel], y[sel])
        self._sources_shown = True
        self._sources_cover = (xy, cover) if sel.size < 20000 else None  # all, or the first

    # ------------------------------------------------------------------ health

    def run_health(self) -> None:
        """Evaluate the health of every amp on a worker; show the failing and warning ones."""
        if self.exposure is None:
            return
        self.health_action.setEnabled(False)
        self.statusBar().showMessage("evaluating amp health…")
        self.runner.submit(
            "cpu",
            health_mod.evaluate_rows,
            self.exposure,
            self.metrics or None,
            on_done=self._on_health,
            on_error=self._on_health_error,
        )

    def _on_health(self, result) -> None:
        rows, summary, counts = result
        self.health_action.setEnabled(True)
        self.health_rows, self.health_counts = rows, counts
        self._update_summary()
        self.health_panel.set_rows(rows, summary)
        self.health_dock.show()
        self.statusBar().showMessage(summary, 8000)
        boxes, outlines = [], []
        for r in rows:
            try:
                i = self.layout.amp_index(r["detector"], r["amp"])
            except KeyError:
                continue
            boxes.append(tuple(self.layout.amp_boxes[i]))
            outlines.append(HEALTH_OUTLINES.get(r["status"], (160, 160, 255, 255)))
        self.health_layer.set_rects(boxes, outline=outlines)
        self.health_done.emit(rows)

    def _on_health_error(self, exc: BaseException) -> None:
        self.health_action.setEnabled(True)
        msg = f"health check failed: {exc}"
        self.health_panel.set_rows([], msg)
        self.health_dock.show()
        self.statusBar().showMessage(msg, 8000)
        self.health_done.emit(None)

    # ------------------------------------------------------------------ hover readout

    def _hover(self, fx: float, fy: float) -> None:
        if self.layout is None:
            return
        loc = self.layout.locate(fx, fy)
        self._hover_loc = loc
        self._set_status(self._hover_text(loc))
        if loc.detector and not loc.absent:
            if not self._final_absent_under(loc):  # else the status says why, and no read can
                self._request_pixel(loc.detector, loc.row, loc.col)
            self._request_header()
            self.overscan.follow(loc.detector)

    def _hover_text(self, loc, exact: dict | None = None) -> str:
        parts = [f"fp ({loc.fx:.1f}, {loc.fy:.1f})"]
        sky = sky_text(self.sky, loc.fx, loc.fy)
        if loc.detector is None:
            return "   ".join([parts[0], sky]).rstrip()
        if loc.unreadable:
            return f"{parts[0]}  {loc.detector}: unreadable, {loc.unreadable}   {sky}".rstrip()
        if loc.absent:
            return f"{parts[0]}  {loc.detector}: not in this exposure   {sky}".rstrip()
        raft, slot = loc.detector.split("_")
        parts.append(f"{raft} {slot} {loc.amp or '-'}")
        parts.append(f"ccd ({loc.ccd_x}, {loc.ccd_y})")
        if loc.amp:
            parts.append(f"amp ({loc.amp_u}, {loc.amp_v})")
        value = self._shown_value(loc)
        missing = self._absent_under(loc)
        if exact is not None and exact.get("missing"):
            parts.append(f"no data ({exact['missing']})")
        elif exact is not None:
            raw = exact.get("raw")
            parts.append(
                f"corrected {exact['corrected']}  raw {raw if raw is not None else '-'} ADU"
            )
        elif missing:
            parts.append(f"no data ({missing})")
        elif value is not None:
            v, level = value
            parts.append(
                f"value {v:.6g}"
                + ("" if level == 0 else f" (mean of {2**level}x{2**level}; exact…)")
            )
        if sky:
            parts.append(sky)
        return "   ".join(parts)

    def _tiles_under(self, loc):
        """(level, tile key, row and column in the tile) of the pixel under the cursor, finest
        level first."""
        src = self.layout.sources.get(loc.detector)
        for level in range(src.n_levels if src is not None else 0):
            r, c = loc.row >> level, loc.col >> level
            cy, cx = src.chunks[level]
            yield level, TileKey(loc.detector, level, r // cy, c // cx), r % cy, c % cx

    def _absent_under(self, loc) -> str | None:
        """Why the tile drawn under the cursor has no data (a missing chunk, a read error)."""
        if not self._absent_tiles:
            return None
        for _, key, _, _ in self._tiles_under(loc):
            tile = self._absent_tiles.get(key)
            if tile is not None:
                return tile.absent
        return None

    def _final_absent_under(self, loc) -> bool:
        """The level-0 chunk under the cursor is known to be missing or corrupt for good: the
        exact pixel's read would only fail again (over HTTP, one more request a mouse move)."""
        for _, key, _, _ in self._tiles_under(loc):
            tile = self._absent_tiles.get(key)
            return tile is not None and not will_retry(tile)
        return False

    def _shown_value(self, loc):
        """The value under the cursor from the finest tile in memory (no read)."""
        for level, key, y, x in self._tiles_under(loc):
            tile = self.view.shown_tile(key)[0] or self.cache.get(key)
            if tile is not None and tile.data is not None:
                return float(tile.data[y, x]), level
        return None

    def _request_pixel(self, det: str, row: int, col: int) -> None:
        req = (det, row, col)
        if self._pixel_busy:
            self._pixel_next = req
            return
        self._pixel_busy = True
        image = self.images.get(det)
        self.runner.submit(
            "io",
            _pixel,
            image,
            row,
            col,
            on_done=lambda res, r=req: self._on_pixel(r, res),
            on_error=lambda e: self._on_pixel(req, None),
        )

    def _on_pixel(self, req, result) -> None:
        self._pixel_busy = False
        loc = self._hover_loc
        if result is not None and loc is not None and (loc.detector, loc.row, loc.col) == req:
            self._set_status(self._hover_text(loc, result))
        nxt, self._pixel_next = self._pixel_next, None
        if nxt is not None and nxt != req:
            self._request_pixel(*nxt)

    def _set_status(self, text: str) -> None:
        self.status_text = text
        self.hover_label.setText(text)
        self.status_changed.emit(text)

    def _request_header(self) -> None:
        loc = self._hover_loc
        if not self.header_dock.isVisible() or loc is None or not loc.detector or loc.absent:
            return
        if self.header_panel.shown_for == loc.detector:
            return
        if self._header_busy:
            self._header_next = loc.detector
            return
        self._header_busy = True
        det = loc.detector
        self.runner.submit(
            "io",
            _header_text,
            self.images.get(det),
            on_done=lambda t: self._on_header(det, t),
            on_error=lambda e: self._on_header(det, f"no header: {e}"),
        )

    def _on_header(self, det: str, text: str) -> None:
        self._header_busy = False
        self.header_panel.set_header(det, text)
        nxt, self._header_next = self._header_next, None
        if nxt and nxt != det:
            self._request_header()

    # ------------------------------------------------------------------ export and closing

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export view", "view.png", "PNG (*.png)")
        if path:
            self.export_png(path)

    def export_png(self, path: str) -> bool:
        return self.view.grab().save(path, "PNG")

    def closeEvent(self, ev) -> None:
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self) -> None:
        """Stop the workers (waits for running reads; cancels queued ones). Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self.compare is not None:
            self.compare.shutdown()
        self.follower.stop()
        for t in (self._restretch_timer, self._settle_timer, self._tables_timer):
            t.stop()
        self.view._fly.stop()
        self.runner.shutdown()
        if self._opening:  # closed while an exposure was opening: collections were off
            gc.enable()


# ---------------------------------------------------------------------- worker functions


def _pixel(image, row: int, col: int) -> dict:
    return image.pixel(row, col)


def _header_text(image) -> str:
    h = image.headers()
    parts = [h.get("primary", "")]
    for name, text in (h.get("segments") or {}).items():
        parts.append(f"\n--- {name} ---\n{text}")
    return "\n".join(parts)


def _read_tables(exposure):
    """Worker: the metrics and sources tables, the sources' positions sorted by x, and why a
    table could not be read (that table is then empty: the rest still works)."""
    out, errors = [], {}
    for name in ("metrics", "sources"):
        try:
            out.append(exposure.table(name))
        except Exception as exc:
            out.append({})
            errors[name] = describe_error(exc)
    return (*out, sorted_positions(out[1]), errors)


def sorted_positions(sources: dict):
    """(x sorted, y) focal-plane positions of a sources table, or None."""
    xy = source_positions(sources)
    if xy is None:
        return None
    order = np.argsort(xy[0], kind="stable")
    return xy[0][order], xy[1][order]


# ---------------------------------------------------------------------- helpers (no Qt)


def split_repository(url: str) -> tuple[str, str]:
    """(repository, exposure name without ``.zarr``) of an exposure path or URL."""
    base = url.rstrip("/")
    repo, _, leaf = base.rpartition("/")
    if leaf.endswith(".zarr"):
        leaf = leaf[: -len(".zarr")]
    return repo or ".", leaf


def join_repository(repo: str, name: str) -> str:
    return f"{repo.rstrip('/')}/{name}.zarr"


def metric_names(metrics: dict) -> list[str]:
    """The numeric columns of a metrics table, other than the identifiers."""
    skip = {"detector", "amp", "detector_id", "amp_index", "raft", "slot", "id"}
    names = []
    for col, values in metrics.items():
        v = np.asarray(values)
        if col not in skip and v.dtype.kind in "fiub":
            names.append(col)
    return names


def metric_per_amp(layout: Layout, metrics: dict, name: str) -> tuple[list[int], np.ndarray]:
    """Layout amp indices and values of one metric (rows whose amp is not drawn are left out)."""
    dets = np.asarray(metrics["detector"]).astype(str)
    amps = np.asarray(metrics["amp"]).astype(str)
    values = np.asarray(metrics[name], dtype=np.float64)
    idx, vals = [], []
    for d, a, v in zip(dets, amps, values):
        try:
            idx.append(layout.amp_index(d, a))
        except KeyError:
            continue
        vals.append(v)
    return idx, np.array(vals, dtype=np.float64)


def heat_colours(values: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """(n, 3) uint8 colours of values under a colour map between ``lo`` and ``hi``."""
    table = (colormap(cmap, 256) * 255).round().astype(np.uint8)
    span = hi - lo if hi > lo else 1.0
    t = np.clip((np.nan_to_num(values, nan=lo) - lo) / span, 0, 1)
    return table[(t * 255).round().astype(int)]


def source_positions(sources: dict):
    """Focal-plane x, y columns of a sources table, whatever they are called."""
    for xn, yn in (("fp_x", "fp_y"), ("focal_x", "focal_y"), ("x_fp", "y_fp"), ("fx", "fy")):
        if xn in sources and yn in sources:
            return np.asarray(sources[xn], dtype=np.float64), np.asarray(
                sources[yn], dtype=np.float64
            )
    return None


def _absent_label(tile: Tile) -> str:
    """The short label drawn on a tile that has no data."""
    if tile.corrupt:
        return "corrupt chunk"
    reason = tile.absent or ""
    return "read error" if reason.startswith("read error") else (reason or "no data")


def _inside(a, b) -> bool:
    """Rect ``a`` within rect ``b``."""
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def _grow(rect, frac: float):
    x0, y0, x1, y1 = rect
    dx, dy = (x1 - x0) * frac, (y1 - y0) * frac
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def _intersects(a, b) -> bool:
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def _tile_rect(layout: Layout, key: TileKey):
    src = layout.overview if key.source == OVERVIEW else layout.sources[key.source]
    return src.tile_rect(key.level, key.ty, key.tx)


def _kl(key: TileKey):
    return key.level, key.ty, key.tx
