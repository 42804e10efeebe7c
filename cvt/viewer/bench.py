"""A scripted pan/zoom session, offscreen, measured (``cvt bench-view``).

What it reports: the time from ``open()`` to the whole focal plane on screen, the longest
GUI-thread stall (a 5 ms ``QTimer`` heartbeat; the largest gap between its ticks), with the GUI
thread's own CPU time in the gaps (on a loaded machine a gap also holds time the thread was not
scheduled, or waited for the interpreter lock), tiles read per second while tiles were wanted,
and the peak resident memory. Each step waits until every
tile the view needs is drawn (``ViewerWindow.is_settled``).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

HEARTBEAT_MS = 5


@dataclass
class Step:
    name: str
    seconds: float
    tiles: int
    max_stall_ms: float
    settled: bool
    max_busy_ms: float = 0.0


@dataclass
class BenchResult:
    url: str
    detectors: int
    first_frame_s: float | None
    settled_s: float | None
    steps: list[Step] = field(default_factory=list)
    max_stall_ms: float = 0.0
    p99_stall_ms: float = 0.0
    max_busy_ms: float = 0.0  # the GUI thread's own CPU time in the longest-working gap
    p99_busy_ms: float = 0.0
    load: tuple = ()
    tiles: int = 0
    tile_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    cache_mb: float = 0.0
    budget_mb: float = 0.0
    error: str | None = None

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.tile_seconds if self.tile_seconds > 0 else 0.0


class Heartbeat:
    """Ticks every 5 ms on the GUI thread; the gaps between ticks are the stalls."""

    def __init__(self):
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.last_cpu = 0.0
        self.gaps: list[float] = []
        self.cpu: list[float] = []  # the GUI thread's own CPU time within each gap

    def start(self) -> None:
        self.last = time.perf_counter()
        self.last_cpu = time.thread_time()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.gaps.append(now - self.last)
        self.cpu.append(cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu

    def mark(self) -> int:
        return len(self.gaps)

    def max_since(self, mark: int) -> float:
        return max(self.gaps[mark:], default=0.0)

    def max_cpu_since(self, mark: int) -> float:
        return max(self.cpu[mark:], default=0.0)


def _spin(app, until, timeout: float) -> bool:
    from PySide6.QtCore import QEventLoop

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 20)
        if until():
            return True
    return False


def run_bench(
    url: str,
    size: tuple[int, int] = (1600, 1000),
    tile_budget_mb: int = 512,
    timeout: float = 60.0,
    log=print,
) -> BenchResult:
    from cvt.viewer.app import application, ensure_platform

    ensure_platform(offscreen=True)
    app = application()
    from cvt.viewer.window import ViewerWindow

    w = ViewerWindow(tile_budget_mb=tile_budget_mb, animate=True)
    for dock in (w.hist_dock, w.header_dock, w.health_dock):
        dock.hide()
    w.view.setFixedSize(*size)
    w.show()
    app.processEvents()
    beat = Heartbeat()
    state: dict = {"first": None, "failed": None}
    w.first_frame.connect(lambda t: state.__setitem__("first", t))
    w.open_failed.connect(lambda m: state.__setitem__("failed", m))
    result = BenchResult(url, 0, None, None, budget_mb=tile_budget_mb)
    tile_time = 0.0

    def step(name: str, action) -> None:
        nonlocal tile_time
        mark, reads0, t0 = beat.mark(), w.loader.reads, time.perf_counter()
        action()
        ok = _spin(app, w.is_settled, timeout)
        dt = time.perf_counter() - t0
        tiles = w.loader.reads - reads0
        if tiles:
            tile_time += dt
        result.steps.append(Step(name, dt, tiles, beat.max_since(mark) * 1e3, ok))
        result.steps[-1].max_busy_ms = beat.max_cpu_since(mark) * 1e3
        log(_step_line(result.steps[-1]))

    beat.start()
    t_open = time.perf_counter()
    w.open(url)
    _spin(app, lambda: state["first"] is not None or state["failed"] is not None, timeout)
    if state["failed"] is not None:
        result.error = state["failed"]
        beat.stop()
        w.close()
        return result
    result.first_frame_s = state["first"]
    ok = _spin(app, w.is_settled, timeout)
    result.settled_s = time.perf_counter() - t_open if ok else None
    result.steps.append(
        Step("open: whole plane, all overview", time.perf_counter() - t_open, w.loader.reads,
             beat.max_since(0) * 1e3, ok)
    )  # fmt: skip
    result.steps[0].max_busy_ms = beat.max_cpu_since(0) * 1e3
    log(_step_line(result.steps[0]))
    layout = w.layout
    result.detectors = len(layout.detectors)
    names = [d.name for d in layout.detectors]
    centre = "R22_S11" if "R22_S11" in names else names[len(names) // 2]
    det = layout.by_name[centre]
    amp = det.amps[len(det.amps) // 2]["name"]
    step(f"fly to CCD {centre}", lambda: w.goto(centre))
    step(f"fly to amp {centre}_{amp}", lambda: w.goto(f"{centre}_{amp}"))
    ax0, ay0, ax1, ay1 = layout.amp_boxes[layout.amp_index(centre, amp)]
    cx, cy = (ax0 + ax1) / 2, (ay0 + ay1) / 2
    step("fly to single pixels (16 px)", lambda: w.view.fly_to((cx - 8, cy - 5, cx + 8, cy + 5)))

    def pan_across() -> None:
        # a 3000-pixel-wide view (level 1 on this screen) dragged across several CCDs
        w.view.set_rect((cx - 1500, cy - 1000, cx + 1500, cy + 1000))
        for _ in range(40):
            w.view.pan(0.06, 0.01)
            _spin(app, lambda: False, 0.03)

    step("pan across CCDs (40 moves)", pan_across)

    def zoom_out_in_steps() -> None:
        for _ in range(12):
            w.view.zoom(1 / 1.5)
            _spin(app, lambda: False, 0.05)

    step("zoom out by wheel steps", zoom_out_in_steps)
    step("fit (F)", lambda: w.view.fit(animate=True))
    beat.stop()
    result.max_stall_ms = max(beat.gaps, default=0.0) * 1e3
    gaps = sorted(beat.gaps)
    result.p99_stall_ms = gaps[int(0.99 * (len(gaps) - 1))] * 1e3 if gaps else 0.0
    busy = sorted(beat.cpu)
    result.max_busy_ms = busy[-1] * 1e3 if busy else 0.0
    result.p99_busy_ms = busy[int(0.99 * (len(busy) - 1))] * 1e3 if busy else 0.0
    result.load = os.getloadavg()
    result.tiles = w.loader.reads
    result.tile_seconds = tile_time + (result.settled_s or 0.0)
    result.cache_mb = w.cache.nbytes / 2**20
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    w.close()
    w.deleteLater()
    app.processEvents()
    return result


def format_result(r: BenchResult) -> str:
    rows = [
        ("exposure", f"{r.url} ({r.detectors} CCDs)"),
        ("open -> whole focal plane", _s(r.first_frame_s) + "   (target <= 1 s local)"),
        ("open -> all overview levels drawn", _s(r.settled_s)),
        ("longest GUI-thread stall", f"{r.max_stall_ms:.1f} ms   (target <= 50 ms)"),
        ("99th percentile heartbeat gap", f"{r.p99_stall_ms:.1f} ms"),
        ("GUI-thread CPU in one gap: max, p99", f"{r.max_busy_ms:.1f} ms, {r.p99_busy_ms:.1f} ms"),
        (
            "machine load (1, 5, 15 min)",
            ", ".join(f"{x:.1f}" for x in r.load) + f" on {os.cpu_count()} cores",
        ),
        ("tiles read", f"{r.tiles}  ({r.tiles_per_s:.0f} tiles/s while loading)"),
        ("tile cache", f"{r.cache_mb:.0f} MB of {r.budget_mb:.0f} MB budget"),
        ("peak RSS", f"{r.peak_rss_mb:.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}s}  {v}" for k, v in rows)


def _step_line(s: Step) -> str:
    return (
        f"  {s.name:<34s} {s.seconds:6.2f} s  {s.tiles:5d} tiles  stall {s.max_stall_ms:5.1f} ms"
        f"  (GUI busy {s.max_busy_ms:5.1f} ms)"
    )


def _s(x: float | None) -> str:
    return "did not happen" if x is None else f"{x:.2f} s"
