"""Running the viewer: interactively, or scripted offscreen for a screenshot."""

from __future__ import annotations

import faulthandler
import os
import sys
import time


def ensure_platform(offscreen: bool) -> None:
    """Offscreen rendering when asked, or when there is no display at all."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return
    if offscreen or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        if sys.platform.startswith("linux"):
            os.environ["QT_QPA_PLATFORM"] = "offscreen"


def application():
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "cvt"])
        app.setApplicationName("cvt")
    return app


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be WxH (e.g. 1600x1000), not {text!r}") from None
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise ValueError(f"size {w}x{h} out of range")
    return w, h


def run_view(
    url: str | None,
    *,
    screenshot: str | None = None,
    compare: str | None = None,
    blink: float | None = None,
    goto: str | None = None,
    overlay: str | None = None,
    size: tuple[int, int] | None = None,
    settings: dict | None = None,
    tile_budget_mb: int | None = None,
    timeout: float = 120.0,
    follow: bool = False,
) -> int:
    """Open ``url`` in a window (none: an empty window, File > Open). With ``screenshot``: render
    offscreen, write the PNG once every needed tile is drawn, and return 0 (2 if the exposure
    cannot be read, 1 on a timeout); what of it could not be read (a corrupt chunk, an
    unreadable detector or table) is drawn, and said on stderr. With ``follow``: ``url`` may be a repository (folder or
    server URL); the window shows its newest exposure and each new one as it is published."""
    ensure_platform(offscreen=screenshot is not None)
    app = application()
    from PySide6.QtCore import QTimer

    from cvt.viewer.window import DEFAULT_TILE_BUDGET_MB, ViewerWindow

    w = ViewerWindow(
        tile_budget_mb=tile_budget_mb or DEFAULT_TILE_BUDGET_MB, animate=screenshot is None
    )
    state = {"code": 0, "tables": overlay is None, "goto_done": goto is None, "written": False}
    if size is not None:
        if screenshot is not None:
            w.view.setFixedSize(*size)
        else:
            w.resize(*size)
    if screenshot is not None:
        for dock in (w.hist_dock, w.health_dock, w.header_dock, w.summary_dock):
            dock.hide()
    if settings:
        w.set_settings(**settings)

    def fail(message: str, code: int) -> None:
        print(f"cvt view: {message}", file=sys.stderr)
        state["code"] = code
        w.close()
        QTimer.singleShot(0, app.quit)  # also right if the event loop has not started yet

    def on_opened(exposure) -> None:
        if compare and w.compare.other is None:
            w.compare.open(compare)
            if blink:
                w.compare.set_interval(blink)
                w.compare.opened.connect(lambda _: w.compare.set_auto_blink(True))
        if goto and not w.goto(goto, animate=False):
            fail(f"{exposure.obsid} has no detector or amp {goto!r}", 2)
            return
        state["goto_done"] = True

    def on_tables() -> None:
        if overlay is None or state["tables"]:
            return
        if overlay not in w.metrics:
            why = w.problems.get("metrics table")
            names = ", ".join(list(w.metrics)[:20]) or "none: the exposure has no metrics table"
            fail(f"no metric {overlay!r} ({why or f'metrics: {names}'})", 2)
            return
        w.set_metric(overlay)
        state["tables"] = True
        maybe_write()

    def maybe_write() -> None:
        if screenshot is None or state["written"] or not state["goto_done"]:
            return
        if not state["tables"] or not w.is_settled():
            return
        other = w.compare.other if compare else None
        if compare and (other is None or other.exposure is None or not other.is_settled()):
            return
        app.processEvents()
        image = (w.centralWidget() if compare else w.view).grab()
        if not image.save(screenshot, "PNG"):
            fail(f"cannot write {screenshot}", 1)
            return
        state["written"] = True
        print(f"wrote {screenshot} ({image.width()}x{image.height()})")
        for pane, win in (("", w), ("[B] ", other)):
            for line in win.damage_lines() if win is not None else []:
                print(f"cvt view: {pane}could not read {line}", file=sys.stderr)
        w.close()
        QTimer.singleShot(0, app.quit)

    if compare:
        w.compare.opened.connect(lambda _: w.compare.other.settled.connect(maybe_write))
        if screenshot is not None:
            w.compare.set_mode("side")
            w.compare.failed.connect(lambda msg: fail(msg, 2))
    w.opened.connect(on_opened)
    w.open_failed.connect(lambda msg: fail(f"cannot open {url}: {msg}", 2))
    w.tables_loaded.connect(on_tables)
    w.settled.connect(maybe_write)
    w.show()
    if url is not None and follow and not url.rstrip("/").endswith(".zarr"):
        QTimer.singleShot(0, lambda: w.follow(url))  # the newest exposure, then each new one
    elif url is not None:
        QTimer.singleShot(0, lambda: w.open(url))  # inside the event loop
        if follow:
            w.opened.connect(lambda _: w.follower.active or w.follow())
    if follow:
        w.opened.connect(lambda e: print(f"following {w.follower.repo}: {e.obsid}", flush=True))
    if screenshot is not None:
        t0 = time.monotonic()
        # a scripted run must end: if even the event loop is stuck, print every thread's stack
        faulthandler.dump_traceback_later(timeout + 30, exit=True)

        def watchdog() -> None:
            if not state["written"] and state["code"] == 0:
                what = "the metrics and sources tables" if w._tables_pending else "tiles"
                fail(f"timed out after {time.monotonic() - t0:.0f} s waiting for {what}", 1)

        QTimer.singleShot(int(timeout * 1000), watchdog)
    app.exec()
    faulthandler.cancel_dump_traceback_later()
    w.shutdown()
    w.deleteLater()
    return state["code"]
