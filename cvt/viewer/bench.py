"""A scripted pan/zoom session, offscreen, measured (``cvt bench-view``).

What it reports: the time from ``open()`` to the whole focal plane on screen, the longest
GUI-thread stall (a 5 ms ``QTimer`` heartbeat; the largest gap between its ticks), with the GUI
thread's own CPU time in the gaps (on a loaded machine a gap also holds time the thread was not
scheduled, or waited for the interpreter lock), what each gap over 50 ms was (the GUI thread
busy, waiting for a core, or waiting for the interpreter lock, of which garbage collection),
with the CPU time of the workers and of other processes in it, tiles read per second while
tiles were wanted, and the peak resident memory. Each step waits until every
tile the view needs is drawn (``ViewerWindow.is_settled``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import threading
import time
from dataclasses import dataclass, field

HEARTBEAT_MS = 5
SPIN_POLL_MS = 5  # how often the bench checks whether a step is done (a QTimer)


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
    long_gaps: list = field(default_factory=list)  # Gap, longer than LONG_GAP_MS
    gc_ms: float = 0.0  # garbage collection, all threads, during the session
    gc_max_ms: float = 0.0
    gc_max_where: tuple = (0.0, "")  # when (s) and on which thread

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.tile_seconds if self.tile_seconds > 0 else 0.0


LONG_GAP_MS = 50.0  # the target: gaps longer than this are accounted for one by one


@dataclass
class Gap:
    """One heartbeat gap, accounted for: where the GUI thread's time went (ms).

    ``busy``: the GUI thread ran (its own CPU time). ``core``: it was runnable but waited for a
    core (Linux ``schedstat`` run delay). ``gil``: neither, so it was blocked: past its timer,
    that is waiting for the interpreter lock held by another thread; ``gc`` is the part of the
    gap some thread spent in a garbage collection (which holds the lock). ``workers``: CPU time
    of this process's other threads; ``others``: CPU time of other processes on the machine
    (``/proc/stat``, 10 ms resolution)."""

    at: float  # seconds since the heartbeat started
    ms: float
    busy: float
    core: float
    gil: float
    gc: float
    workers: float
    others: float

    @property
    def kind(self) -> str:
        """What most of the gap was: GUI busy, waiting for a core, garbage collection, or
        waiting for the interpreter lock held by a worker."""
        lock = max(self.gil - self.gc, 0.0)
        parts = {"GUI busy": self.busy, "waiting for a core": self.core, "GC": self.gc,
                 "GIL (workers)": lock}  # fmt: skip
        return max(parts, key=parts.get)

    def line(self) -> str:
        return (
            f"{self.ms:6.1f} ms at {self.at:6.2f} s: {self.kind:<18s} busy {self.busy:5.1f}, "
            f"core wait {self.core:5.1f}, lock wait {self.gil:5.1f} (GC {self.gc:5.1f}); "
            f"CPU of workers {self.workers:5.1f}, of other processes {self.others:5.1f}"
        )


class _ProcClock:
    """The GUI thread's run delay and the machine's busy CPU time (Linux /proc), or zeros."""

    def __init__(self):
        self._sched = self._stat = None
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        with contextlib.suppress(OSError, AttributeError):
            self._sched = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # this thread
            self._stat = os.open("/proc/stat", os.O_RDONLY)

    def run_delay(self) -> float:
        if self._sched is None:
            return 0.0
        return int(os.pread(self._sched, 128, 0).split()[1]) / 1e9

    def machine_busy(self) -> float:
        if self._stat is None:
            return 0.0
        v = [int(x) for x in os.pread(self._stat, 256, 0).split(b"\n", 1)[0].split()[1:]]
        return (sum(v) - v[3] - v[4]) / self._tick  # all but idle and iowait

    def close(self) -> None:
        for fd in (self._sched, self._stat):
            if fd is not None:
                os.close(fd)
        self._sched = self._stat = None


class Heartbeat:
    """Ticks every 5 ms on the GUI thread; the gaps between ticks are the stalls. Each gap is
    split into the GUI thread's own CPU time and the rest (on a loaded machine a gap also holds
    time the thread was not scheduled, or waited for the interpreter lock); gaps longer than
    ``LONG_GAP_MS`` are accounted for in full (``Gap``)."""

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
        self.long: list[Gap] = []
        self._clock: _ProcClock | None = None
        self._gc_total = 0.0
        self._gc_t0 = 0.0
        self.gc_max = 0.0
        self.gc_max_where = (0.0, "")

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            dt = time.perf_counter() - self._gc_t0
            self._gc_total += dt
            if dt > self.gc_max:
                self.gc_max = dt
                self.gc_max_where = (self._gc_t0 - self.t0, threading.current_thread().name)

    def _sample(self) -> tuple:
        c = self._clock
        return (time.process_time(), c.run_delay(), c.machine_busy(), self._gc_total)

    def start(self) -> None:
        self._clock = _ProcClock()  # on the GUI thread: its schedstat
        gc.callbacks.append(self._gc)
        self.t0 = self.last = time.perf_counter()
        self.last_cpu = time.thread_time()
        self._last_sample = self._sample()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)
        if self._clock is not None:
            self._clock.close()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        sample = self._sample()
        gap, busy = now - self.last, cpu - self.last_cpu
        self.gaps.append(gap)
        self.cpu.append(busy)
        if gap * 1e3 > LONG_GAP_MS:
            (p0, r0, m0, g0), (p1, r1, m1, g1) = self._last_sample, sample
            core = r1 - r0
            own = p1 - p0
            self.long.append(
                Gap(
                    at=self.last - self.t0,
                    ms=gap * 1e3,
                    busy=busy * 1e3,
                    core=core * 1e3,
                    gil=max(0.0, gap - HEARTBEAT_MS / 1e3 - busy - core) * 1e3,
                    gc=min(g1 - g0, gap) * 1e3,
                    workers=max(0.0, own - busy) * 1e3,
                    others=max(0.0, (m1 - m0) - own) * 1e3,
                )
            )
        self.last, self.last_cpu, self._last_sample = now, cpu, sample

    def mark(self) -> int:
        return len(self.gaps)

    def max_since(self, mark: int) -> float:
        return max(self.gaps[mark:], default=0.0)

    def max_cpu_since(self, mark: int) -> float:
        return max(self.cpu[mark:], default=0.0)


def _spin(until, timeout: float) -> bool:
    """Run the event loop as ``app.exec()`` does (the GUI thread sleeps until an event comes)
    until ``until()`` holds, checked every ``SPIN_POLL_MS``, or ``timeout`` s have passed.

    Not a loop around ``processEvents(flags, maxtime)``: that overload never waits (Qt drops
    ``WaitForMoreEvents`` from it), so the bench kept the GUI thread at 100 % of a core and
    the interpreter lock, ~400,000 calls a second, and measured that as the viewer's stalls."""
    from PySide6.QtCore import QEventLoop, QTimer

    if until():
        return True
    loop = QEventLoop()
    deadline = time.perf_counter() + timeout
    met = []

    def check() -> None:
        if until():
            met.append(True)
            loop.quit()
        elif time.perf_counter() >= deadline:
            loop.quit()

    timer = QTimer()
    timer.setInterval(SPIN_POLL_MS)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    return bool(met)


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
        ok = _spin(w.is_settled, timeout)
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
    _spin(lambda: state["first"] is not None or state["failed"] is not None, timeout)
    if state["failed"] is not None:
        result.error = state["failed"]
        beat.stop()
        w.close()
        return result
    result.first_frame_s = state["first"]
    ok = _spin(w.is_settled, timeout)
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
            _spin(lambda: False, 0.03)

    step("pan across CCDs (40 moves)", pan_across)

    def zoom_out_in_steps() -> None:
        for _ in range(12):
            w.view.zoom(1 / 1.5)
            _spin(lambda: False, 0.05)

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
    result.long_gaps = list(beat.long)
    result.gc_ms, result.gc_max_ms = beat._gc_total * 1e3, beat.gc_max * 1e3
    result.gc_max_where = beat.gc_max_where
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
        ("gaps > 50 ms, by cause", _kinds(r.long_gaps)),
        (
            "garbage collection: total, longest",
            f"{r.gc_ms:.0f} ms, {r.gc_max_ms:.1f} ms"
            f" (at {r.gc_max_where[0]:.2f} s, {r.gc_max_where[1]})",
        ),
        ("tiles read", f"{r.tiles}  ({r.tiles_per_s:.0f} tiles/s while loading)"),
        ("tile cache", f"{r.cache_mb:.0f} MB of {r.budget_mb:.0f} MB budget"),
        ("peak RSS", f"{r.peak_rss_mb:.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}s}  {v}" for k, v in rows]
    if r.long_gaps:
        lines.append("longest gaps (lock wait: off-CPU but not waiting for a core):")
        lines += ["  " + g.line() for g in sorted(r.long_gaps, key=lambda g: -g.ms)[:5]]
    return "\n".join(lines)


def _kinds(gaps: list) -> str:
    if not gaps:
        return "none"
    counts: dict[str, int] = {}
    for g in gaps:
        counts[g.kind] = counts.get(g.kind, 0) + 1
    return f"{len(gaps)}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


def _step_line(s: Step) -> str:
    return (
        f"  {s.name:<34s} {s.seconds:6.2f} s  {s.tiles:5d} tiles  stall {s.max_stall_ms:5.1f} ms"
        f"  (GUI busy {s.max_busy_ms:5.1f} ms)"
    )


def _s(x: float | None) -> str:
    return "did not happen" if x is None else f"{x:.2f} s"
