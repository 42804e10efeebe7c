"""Compare two exposures: blink them in one place, or show them side by side, linked.

Exposure B is a second ``ViewerWindow`` embedded as a pane (``embedded=True``: its toolbar,
menus, docks and status bar hidden), so it has its own loader, tile cache, statistics and
stretch pipeline: the very code that draws A, not a copy. The controller only wires the two:

- the panes' views are linked by centre and scale (focal-plane pixels per screen pixel), so
  pan and zoom stay locked whatever the panes' sizes;
- A's display settings, overlay switches and metric are applied to B as they change;
- blink stacks the two panes in the same place (both laid out and loading, B under A) and
  raises one or the other, so a blink swaps finished pictures and costs no read;
- side by side puts them in a splitter;
- what B cannot read (its pane has no status bar or docks of its own) is said in the window's
  status bar after "[B]", and the summary dock shows the summary of the exposure shown (both,
  side by side).

Limits are computed from each exposure's own pixels unless they are manual: to compare pixel
values one for one, drag the histogram's limits (manual limits are shared exactly).
"""

from __future__ import annotations

import dataclasses
import os

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QLabel,
    QSizePolicy,
    QSplitter,
    QStackedLayout,
    QVBoxLayout,
    QWidget,
)

DEFAULT_BLINK_S = 1.0
MODES = ("blink", "side")
_CAPTION_STYLE = {
    "A": "background: #1f4e8c; color: white; padding: 2px 6px;",
    "B": "background: #8c4a1f; color: white; padding: 2px 6px;",
}


class PaneBox(QWidget):
    """One exposure's view with a caption that says which one it is."""

    def __init__(self, tag: str, widget: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.tag = tag
        self.caption = QLabel(tag, self)
        self.caption.setStyleSheet(_CAPTION_STYLE[tag])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.caption)
        lay.addWidget(widget, 1)
        widget.show()  # a widget taken from another parent comes hidden
        self.widget = widget


class CompareArea(QWidget):
    """The two panes, stacked in one place (blink) or in a splitter (side by side)."""

    def __init__(self, a: QWidget, b: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.boxes = {"A": PaneBox("A", a), "B": PaneBox("B", b)}
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self.holder: QWidget | None = None
        self.stack: QStackedLayout | None = None
        self.mode = ""
        self.set_mode("blink")

    def set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        old = self.holder
        if mode == "side":
            holder = QSplitter(Qt.Orientation.Horizontal, self)
            holder.setChildrenCollapsible(False)
            for box in self.boxes.values():
                holder.addWidget(box)
            self.stack = None
        else:
            holder = QWidget(self)
            stack = QStackedLayout(holder)
            # every pane laid out at the same size and kept visible (loading); the current
            # one is raised: a blink swaps finished pictures
            stack.setStackingMode(QStackedLayout.StackingMode.StackAll)
            for box in self.boxes.values():
                stack.addWidget(box)
            self.stack = stack
        self._lay.addWidget(holder)
        for box in self.boxes.values():
            box.show()
        if old is not None:
            old.setParent(None)
            old.deleteLater()
        self.holder, self.mode = holder, mode

    def raise_pane(self, tag: str) -> None:
        if self.stack is not None:
            self.stack.setCurrentWidget(self.boxes[tag])
            self.boxes[tag].raise_()


class CompareController(QObject):
    """Exposure B next to (or under) the window's exposure A; the Compare menu."""

    opened = Signal(object)  # B's Exposure
    failed = Signal(str)  # the message shown
    changed = Signal()  # mode or the pane shown changed

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.other = None  # ViewerWindow of B, embedded
        self.area: CompareArea | None = None
        self.url: str | None = None
        self.mode = "blink"
        self.shown = "A"
        self._linking = False
        self.blink_timer = QTimer(self, interval=int(DEFAULT_BLINK_S * 1000))
        self.blink_timer.timeout.connect(self.toggle)
        self.state_label = QLabel("", window)
        window.statusBar().addPermanentWidget(self.state_label)
        self.b_damage_label = QLabel("", window)  # what B is failing to read, or cannot
        self.b_damage_label.setStyleSheet(f"QLabel {{ {_CAPTION_STYLE['B']} }}")
        self.b_damage_label.hide()
        # clipped, not widening the window (the whole text is its tool tip)
        self.b_damage_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        window.statusBar().addPermanentWidget(self.b_damage_label, 1)
        self._build_menu()
        window.settings_changed.connect(self._push_settings)
        window.opened.connect(lambda _: self._update_labels())
        window.view.view_changed.connect(lambda: self._link(window, self.other))
        window.outlines_check.toggled.connect(lambda on: self._with_other("outlines_check", on))
        window.labels_check.toggled.connect(lambda on: self._with_other("labels_check", on))
        window.sources_check.toggled.connect(lambda on: self._with_other("sources_check", on))
        window.metric_box.currentTextChanged.connect(lambda _: self._push_metric())
        self._update_actions()

    # ------------------------------------------------------------------ menu

    def _build_menu(self) -> None:
        w = self.w
        menu = w.menuBar().addMenu("&Compare")
        self.menu = menu

        def action(text, slot, key=None, checkable=False, tip=None):
            act = QAction(text, w)
            if key:
                act.setShortcut(QKeySequence(key))
            act.setCheckable(checkable)
            if tip:
                act.setToolTip(tip)
            act.triggered.connect(slot)
            menu.addAction(act)
            w.addAction(act)  # the shortcut works wherever the focus is in the window
            return act

        self.act_open = action("Compare with exposure…", self._open_dialog, "Ctrl+Shift+O")
        self.act_url = action("Compare with URL…", self._url_dialog)
        menu.addSeparator()
        self.act_blink = action("Blink A / B", lambda: self.toggle(), "B")
        self.act_auto = action(
            "Auto-blink", lambda on: self.set_auto_blink(on), "Shift+B", checkable=True
        )
        self.act_interval = action("Auto-blink interval…", self._interval_dialog)
        self.act_side = action(
            "Side by side", lambda on: self.set_mode("side" if on else "blink"), "Ctrl+B", True
        )
        menu.addSeparator()
        self.act_stop = action("Stop comparing", lambda: self.stop())

    def _update_actions(self) -> None:
        on = self.other is not None
        for act in (self.act_blink, self.act_auto, self.act_interval, self.act_side, self.act_stop):
            act.setEnabled(on)
        self.act_side.setChecked(on and self.mode == "side")
        self.act_auto.setChecked(self.blink_timer.isActive())

    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.w, "Compare with an exposure (.zarr)")
        if path:
            self.open(path)

    def _url_dialog(self) -> None:
        url, ok = QInputDialog.getText(self.w, "Compare with", "exposure path or URL:")
        if ok and url.strip():
            self.open(url.strip())

    def _interval_dialog(self) -> None:
        s, ok = QInputDialog.getDouble(
            self.w, "Auto-blink", "seconds per exposure:", self.interval, 0.1, 60.0, 2
        )
        if ok:
            self.set_interval(s)

    # ------------------------------------------------------------------ B

    @property
    def interval(self) -> float:
        return self.blink_timer.interval() / 1000.0

    def set_interval(self, seconds: float) -> None:
        if not 0.05 <= seconds <= 600:
            raise ValueError(f"blink interval must be 0.05 .. 600 s, not {seconds}")
        self.blink_timer.setInterval(round(seconds * 1000))

    def open(self, url: str | os.PathLike) -> None:
        """Open exposure B (a path or URL) through the same machinery as A; returns at once.
        A target that cannot be opened is reported in the status bar, naming it."""
        from cvt.viewer.window import ViewerWindow

        self.url = os.fspath(url)
        if self.other is None:
            w = self.w
            self.other = ViewerWindow(
                tile_budget_mb=max(1, int(w.cache.budget / 2**20)),
                animate=False,
                embedded=True,
            )
            self.other.opened.connect(self._on_opened)
            self.other.open_failed.connect(self._on_failed)
            self.other.view.view_changed.connect(lambda: self._link(self.other, self.w))
            self.other.status_changed.connect(self._on_b_status)
            self.other.damage_changed.connect(self._on_b_damage)
            self.other.summary_changed.connect(self.update_summary)
            self.other.tables_loaded.connect(self._push_metric)
            self._install()
            self._push_settings(w.settings)
            for name in ("outlines_check", "labels_check", "sources_check"):
                self._with_other(name, getattr(w, name).isChecked())
        self.state_label.setText(f"opening B: {self.url}")
        self.other.open(self.url)

    def _install(self) -> None:
        """Put A's view and B's pane into the compare area, as the window's central widget."""
        w = self.w
        view = w.takeCentralWidget()  # not deleted: it moves into the area
        self.area = CompareArea(view, self.other, w)
        self.area.set_mode(self.mode)
        w.setCentralWidget(self.area)
        self.area.raise_pane(self.shown)

    def _on_opened(self, exposure) -> None:
        # B starts where A is, with A's settings (its own fit is undone at once)
        self._link(self.w, self.other, force=True)
        self._update_labels()
        self._update_actions()
        self.opened.emit(exposure)

    def _on_failed(self, msg: str) -> None:
        text = f"cannot compare with {self.url}: {msg}"
        if self.other is not None and self.other.exposure is None:
            self.stop()
        self.w.statusBar().showMessage(text, 15000)
        self.state_label.setText(text if self.other is None else self.state_label.text())
        self.failed.emit(text)

    def _on_b_status(self, text: str) -> None:
        if text:
            self.w.hover_label.setText(f"[B] {text}")

    def _on_b_damage(self, note: str) -> None:
        self.b_damage_label.setText(f"[B] {note}" if note else "")
        self.b_damage_label.setToolTip(note)
        self.b_damage_label.setVisible(bool(note))

    def update_summary(self) -> None:
        """The summary dock: the shown exposure's summary (blink), or A's and B's (side by
        side), each under its heading; A's alone when not comparing."""
        w, other = self.w, self.other
        if other is None:
            w.summary_panel.set_summary(w.summary_rows())
            return
        panes = [("A", w, w.url), ("B", other, self.url)]
        if self.mode == "blink":
            panes = [p for p in panes if p[0] == self.shown]
        sections = []
        for tag, win, url in panes:
            obsid = win.exposure.obsid if win.exposure is not None else "opening…"
            rows = win.summary_rows() or [("exposure", "opening…")]
            sections.append((f"[{tag}] {obsid}   {url or ''}", rows))
        w.summary_panel.set_sections(sections)

    def stop(self) -> None:
        """Back to A alone."""
        self.blink_timer.stop()
        if self.other is None:
            self._update_actions()
            return
        w, other = self.w, self.other
        other.shutdown()
        self.other = None
        self._on_b_damage("")
        self.update_summary()
        area = w.takeCentralWidget()
        w.setCentralWidget(w.view)
        w.view.show()
        if area is not None:
            area.setParent(None)
            area.deleteLater()
        self.area = None
        self.shown = "A"
        self.state_label.setText("")
        self._update_labels()
        self._update_actions()
        self.changed.emit()

    def shutdown(self) -> None:
        self.blink_timer.stop()
        if self.other is not None:
            self.other.shutdown()

    # ------------------------------------------------------------------ modes

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown compare mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        if mode == "side":
            self.blink_timer.stop()
        if self.area is not None:
            self.area.set_mode(mode)
            self.area.raise_pane(self.shown)
        self._update_labels()
        self._update_actions()
        self.update_summary()
        self.changed.emit()

    def show_pane(self, tag: str) -> None:
        """Blink to ``A`` or ``B`` (switching to blink mode)."""
        if tag not in ("A", "B"):
            raise ValueError(f"pane is A or B, not {tag!r}")
        if self.other is None:
            return
        if self.mode != "blink":
            self.set_mode("blink")
        self.shown = tag
        self.area.raise_pane(tag)
        self._update_labels()
        self.update_summary()
        self.changed.emit()

    def toggle(self) -> None:
        self.show_pane("B" if self.shown == "A" else "A")

    def set_auto_blink(self, on: bool) -> None:
        if on and self.other is not None:
            if self.mode != "blink":
                self.set_mode("blink")
            self.blink_timer.start()
        else:
            self.blink_timer.stop()
        self._update_actions()

    def shown_view(self):
        """The view on top in blink mode."""
        return self.w.view if self.shown == "A" or self.other is None else self.other.view

    # ------------------------------------------------------------------ keeping B like A

    def _link(self, src, dst, force: bool = False) -> None:
        """Give ``dst``'s view the centre and scale of ``src``'s (once: the echo agrees)."""
        if dst is None or src is None or src.layout is None or self._linking:
            return
        if dst.layout is None and not force:
            return
        cx, cy, px = src.view.center_scale()
        dx, dy, dp = dst.view.center_scale()
        if not force and abs(dp - px) <= 1e-6 * px and max(abs(dx - cx), abs(dy - cy)) <= 1e-3 * px:
            return
        self._linking = True
        try:
            dst.view.set_center_scale(cx, cy, px)
        finally:
            self._linking = False

    def _push_settings(self, settings) -> None:
        if self.other is not None:
            self.other.set_settings(**dataclasses.asdict(settings))

    def _with_other(self, name: str, on: bool) -> None:
        if self.other is not None:
            getattr(self.other, name).setChecked(on)

    def _push_metric(self) -> None:
        if self.other is None:
            return
        name = self.w.metric_box.currentText()
        self.other.set_metric(name if name in self.other.metrics else None)

    def _update_labels(self) -> None:
        w = self.w
        a = w.exposure.obsid if w.exposure is not None else "-"
        if self.other is None:
            if w.exposure is not None:
                w.setWindowTitle(f"CVT — {a}")
            return
        b = self.other.exposure.obsid if self.other.exposure is not None else "opening…"
        if self.area is not None:
            self.area.boxes["A"].caption.setText(f"A  {a}   {w.url or ''}")
            self.area.boxes["B"].caption.setText(f"B  {b}   {self.url or ''}")
        if self.mode == "blink":
            which = f"showing {self.shown}"
            self.state_label.setText(
                f"blink: showing {self.shown} ({a if self.shown == 'A' else b})"
            )
        else:
            which = "side by side"
            self.state_label.setText(f"side by side: A {a} | B {b}")
        w.setWindowTitle(f"CVT — A {a} / B {b} ({which})")
