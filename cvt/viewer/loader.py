"""Work off the GUI thread: a task runner and the tile loader.

Threads (``ThreadPoolExecutor`` s): ``cvt-io-*`` (opening exposures, tile reads, pixel values,
tables), ``cvt-cpu-*`` (statistics, transfers, health evaluation), ``cvt-draw-*`` (the
stretch and colour stages of tiles about to be drawn, never queued behind the others) and
``cvt-follow-*`` (watching the repository, catalog queries: slow by nature, kept apart). Results
come back to the GUI thread as Qt signals (queued connections: the receivers live in the GUI
thread, the emitters run in the workers). Nothing here touches a widget.

The tile loader is request/response: the view asks for the tiles it wants, in order; requests
still queued when the view moves on are cancelled; a response that no longer matches what the
view wants (``generation``) is cached but not drawn. Each read also turns the data into the
index image with the transfers current at the time (the stretch stage), so an arriving tile
costs the GUI thread only a ``setImage``.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal

from core.lazyzarr import CorruptChunk, read_chunk
from cvt.display import apply_rects, colourise
from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)
from cvt.viewer.stats import table_for, tile_samples
from cvt.viewer.tiles import OVERVIEW, Layout, Tile, TileCache, TileKey

WORKER_NICE = 10  # scheduling priority of the worker threads, below the GUI thread's
DELIVERY_BUDGET_S = 0.006  # GUI-thread time spent on arrived results before other events


class Inbox(QObject):
    """Results from the workers, handled on the GUI thread in order, a slice of at most
    ``DELIVERY_BUDGET_S`` at a time.

    Each result arrives as a queued signal, and Qt handles every posted event (each of them,
    and the repaints they ask for) before it looks at its timers or input again: a burst of
    tiles (a level re-stretched, a fly's tiles coming in together) held the GUI thread for
    their sum. Here arrival only queues the result; a zero timer handles what fits in the
    budget, and comes back after the other events for the rest."""

    def __init__(self, handler: Callable, parent: QObject | None = None):
        super().__init__(parent)
        self._handler = handler
        self._items: collections.deque = collections.deque()
        self._timer = QTimer(self, singleShot=True, interval=0)
        self._timer.timeout.connect(self._drain)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item) -> None:
        self._items.append(item)
        if not self._timer.isActive():
            self._timer.start()

    def _drain(self) -> None:
        deadline = time.perf_counter() + DELIVERY_BUDGET_S
        while self._items:
            item = self._items.popleft()
            try:
                self._handler(item)
            except Exception:  # as a slot's exception: reported, the next ones still handled
                traceback.print_exc()
            if time.perf_counter() >= deadline:
                break
        if self._items:
            self._timer.start()


def worker_threads() -> int:
    """Threads of each CPU-bound pool: one core is left to the GUI thread."""
    return max(1, (os.cpu_count() or 2) - 1)


def lower_priority(nice: int = WORKER_NICE) -> None:
    """Thread initialiser: run this worker thread at a lower priority than the GUI thread, so
    that the GUI thread, when it wakes, gets a core at once instead of queueing behind decodes
    and stretches. Linux schedules threads, so ``setpriority`` on a thread id affects that
    thread alone; elsewhere this does nothing."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))


def _started_pool(n: int, prefix: str) -> ThreadPoolExecutor:
    """A pool of ``n`` low-priority threads, all started now. A pool starts its threads one at a
    time, inside ``submit`` when no thread is idle, and ``submit`` then waits until the new
    thread runs: on the GUI thread, 6 ms of an exposure's opening on a busy machine (its thread
    had to get a core and the interpreter lock). Each thread is held by a task until all have
    started."""
    pool = ThreadPoolExecutor(n, thread_name_prefix=prefix, initializer=lower_priority)
    barrier = threading.Barrier(n)
    for _ in range(n):
        pool.submit(barrier.wait, 30.0)
    return pool


class TaskRunner(QObject):
    """Thread pools whose results are delivered on the GUI thread. Their threads run at a
    lower priority than the GUI thread (``lower_priority``)."""

    _finished = Signal(object)

    def __init__(
        self, io_threads: int = 4, cpu_threads: int | None = None, parent: QObject | None = None
    ):
        super().__init__(parent)
        cpu_threads = cpu_threads or worker_threads()
        self.pools = {
            "io": _started_pool(io_threads, "cvt-io"),
            "cpu": _started_pool(cpu_threads, "cvt-cpu"),
            # what is about to be drawn never waits behind statistics or a health check
            "draw": _started_pool(cpu_threads, "cvt-draw"),
            # following a repository (a long-lived event stream, listings, catalog queries):
            # never takes a tile reader's thread, whatever a slow server does
            "follow": ThreadPoolExecutor(
                3, thread_name_prefix="cvt-follow", initializer=lower_priority
            ),
        }
        self._closed = False
        self._outstanding = 0
        self._lock = threading.Lock()
        # queued even when emitted on the GUI thread (a future already done when its callback
        # is added calls it at once): a result is never delivered inside ``submit``
        self._inbox = Inbox(self._deliver, self)
        self._finished.connect(self._inbox.put, Qt.ConnectionType.QueuedConnection)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def outstanding(self) -> int:
        """Tasks submitted whose result has not been delivered yet."""
        return self._outstanding

    def submit(
        self,
        pool: str,
        fn: Callable,
        *args,
        on_done: Callable | None = None,
        on_error: Callable | None = None,
    ) -> Future | None:
        if self._closed:
            return None
        with self._lock:
            self._outstanding += 1
        fut = self.pools[pool].submit(fn, *args)
        fut.add_done_callback(lambda f: self._emit((f, on_done, on_error)))
        return fut

    def _emit(self, item) -> None:
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the QObject is gone (shutting down)
            self._finished.emit(item)

    def _deliver(self, item) -> None:
        fut, on_done, on_error = item
        with self._lock:
            self._outstanding -= 1
        if self._closed or fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            if on_error is not None:
                on_error(exc)
            else:
                traceback.print_exception(exc)
            return
        if on_done is not None:
            on_done(fut.result())

    def shutdown(self) -> None:
        """Cancel what has not started, wait for what has (no thread outlives the window)."""
        self._closed = True
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


RETRY_FIRST_S = 0.5  # the first retry of a tile whose read failed; doubling each time
RETRY_MAX_S = 30.0
RETRY_ROUNDS = 8  # then the tile stays drawn as failed until the view asks for it again


def is_read_error(tile: Tile) -> bool:
    """A tile that could not be read (the server failed, or the chunk is corrupt), unlike a
    chunk the store does not have."""
    return tile.data is None and bool(tile.absent) and tile.absent.startswith("read error")


def will_retry(tile: Tile) -> bool:
    """A read error worth trying again: the link's (a server fault, a timeout, a dropped
    connection), not the data's. A chunk read whole that does not decode (``CorruptChunk``,
    over HTTP a short body every attempt) is final for the exposure: retried, it kept its
    overview level incomplete and the view from ever settling."""
    return is_read_error(tile) and not tile.corrupt


def read_error(key: TileKey, exc: BaseException, prefix: str = "") -> Tile:
    """The tile of a read that raised ``exc``: absent, with the reason and whether it is final."""
    return Tile(
        key, None, absent=f"read error: {prefix}{exc}", corrupt=isinstance(exc, CorruptChunk)
    )


@dataclass
class Failure:
    """A tile whose read failed: how often, when it is tried again, and why."""

    rounds: int
    due: float  # time.monotonic()
    reason: str
    resident: bool
    wait: float = 0.0  # seconds waited before this retry (the backoff)


@dataclass(order=True)
class _Request:
    priority: tuple
    seq: int
    key: TileKey = field(compare=False)
    generation: int = field(compare=False)
    resident: bool = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class TileLoader(QObject):
    """Reads tiles on the ``io`` pool, best first, and hands them to the GUI thread.

    Priorities: the coarsest overview level (the first frame), then the view's tiles in the
    order asked, then the rest of the overview, coarse to fine.
    """

    tile_loaded = Signal(object)  # Tile, for the view (only if still wanted)
    tile_read = Signal(object)  # every detector Tile read (wanted or not): for the statistics
    resident_loaded = Signal(object)  # Tile of the overview
    _response = Signal(object)

    def __init__(self, runner: TaskRunner, cache: TileCache, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner
        self.cache = cache
        self._heap: list[_Request] = []
        self._queued: dict[TileKey, _Request] = {}
        self._in_flight: dict[TileKey, int] = {}  # tiles being read, and their epoch
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.generation = 0
        self.epoch = 0  # grows with each exposure; responses of another epoch are dropped
        self.wanted: set[TileKey] = set()
        self.exposure = None
        self.images: dict = {}
        self.layout: Layout | None = None
        self.tables: dict = {}  # (domain, level) -> Transfers, replaced whole (atomic)
        self.colour: tuple[int, np.ndarray] | None = None  # (version, ARGB table)
        # counters (the benchmark and the tests read them)
        self.requested = 0
        self.reads = 0
        self.cancelled = 0
        self.dropped = 0
        self.failed = 0  # reads that failed and will be tried again
        self.corrupt = 0  # reads of corrupt chunks (final: not tried again)
        self.retried = 0
        self.failures: dict[TileKey, Failure] = {}  # read errors waiting for their retry
        self._retry_timer = QTimer(self, singleShot=True)
        self._retry_timer.timeout.connect(self._retry_due)
        self._readers = 0  # io tasks reading queued tiles
        self._inbox = Inbox(self._on_response, self)
        self._response.connect(self._inbox.put)

    # --- configuration (GUI thread)

    def reset(self, exposure, images: dict, layout: Layout) -> None:
        """A new exposure: forget every queued request."""
        with self._lock:
            for r in self._queued.values():
                r.cancelled = True
            self._queued.clear()
            self._heap.clear()
            # reads under way are of the old exposure: their responses are dropped, and the
            # same tile key of the new one is read again, not taken for one in flight
            self._in_flight.clear()
            self.epoch += 1
            self.exposure, self.images, self.layout = exposure, images, layout
            self.wanted = set()
            # the transfers are per amp of the old layout: with another exposure's amps they
            # would index out of range (and the read would never come back)
            self.tables = {}
        self.failures.clear()
        self._retry_timer.stop()
        self.cache.clear()

    def set_tables(self, tables: dict) -> None:
        self.tables = dict(tables)  # a new dict: the workers see the old one or the new one

    def set_colour(self, version: int, lut: np.ndarray) -> None:
        self.colour = (version, lut)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._queued) or bool(self._in_flight)

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def retry_pending(self) -> bool:
        """A failed read will be tried again (the view is not final yet)."""
        return any(f.rounds <= RETRY_ROUNDS for f in self.failures.values())

    def failure_note(self) -> str:
        """For the status bar: how many reads are failing, the next retry, the last reason."""
        if not self.failures:
            return ""
        waiting = [f for f in self.failures.values() if f.rounds <= RETRY_ROUNDS]
        last = max(self.failures.values(), key=lambda f: f.due)
        text = f"{len(self.failures)} tile{'s' if len(self.failures) != 1 else ''} failing"
        if waiting:
            wait = max(0.0, min(f.due for f in waiting) - time.monotonic())
            text += f", retry in {wait:.1f} s"
        else:
            text += ", gave up (move the view to try again)"
        return f"{text}: {last.reason[:160]}"

    # --- requests (GUI thread)

    def load_resident(self, keys: Iterable[TileKey], first: bool = False) -> None:
        """Overview tiles: never cancelled, never evicted (the caller keeps them)."""
        for i, key in enumerate(keys):
            self._push(_Request((0 if first else 2, -key.level, i), 0, key, 0, True))

    def request(self, keys: list[TileKey]) -> int:
        """The tiles the view wants now, best first. Cancels queued ones it no longer wants;
        returns the new generation."""
        with self._lock:
            self.generation += 1
            self.wanted = set(keys)
            for key, r in list(self._queued.items()):
                if not r.resident:
                    r.cancelled = True
                    del self._queued[key]
                    self.cancelled += 1
        for i, key in enumerate(keys):
            if key in self.cache or key in self._in_flight:
                continue
            self._push(_Request((1, i), 0, key, self.generation, False))
        return self.generation

    def _push(self, req: _Request) -> None:
        with self._lock:
            if req.key in self._queued or req.key in self._in_flight:
                return
            req.seq = next(self._seq)
            heapq.heappush(self._heap, req)
            self._queued[req.key] = req
            self.requested += 1
            # a few readers, each reading until the queue is empty (queueing the 85 overview
            # tiles at open was 85 pool submissions, 24 ms of the GUI thread); one io thread
            # is left to the other io tasks (pixel values, headers, tables)
            if self._readers >= max(1, self.runner.pools["io"]._max_workers - 1):
                return
            self._readers += 1
        if self.runner.submit("io", self._read_queued) is None:  # shut down
            with self._lock:
                self._readers -= 1

    # --- the workers

    def _read_queued(self) -> None:
        """Read the best queued tile, then the next, until none is left (or the runner shuts
        down). A tile that fails to read still comes back (absent, with the reason), so its key
        always leaves in-flight."""
        while True:
            with self._lock:
                while self._heap:
                    req = heapq.heappop(self._heap)
                    if not req.cancelled:
                        break
                else:
                    req = None
                if req is None or self.runner.closed:
                    self._readers -= 1
                    return
                del self._queued[req.key]
                self._in_flight[req.key] = self.epoch
                epoch, exposure, images = self.epoch, self.exposure, self.images
                layout = self.layout
                self.reads += 1
            try:
                tile = read_tile(exposure, images, layout, req.key, self.tables, self.colour)
            except Exception as exc:
                tile = read_error(req.key, exc, f"{type(exc).__name__}: ")
            except BaseException:
                with self._lock:
                    self._readers -= 1
                    if self._in_flight.get(req.key) == epoch:
                        del self._in_flight[req.key]
                raise
            self._response.emit((epoch, req, tile))

    # --- responses (GUI thread)

    def _on_response(self, item) -> None:
        epoch, req, tile = item
        with self._lock:
            if self._in_flight.get(req.key) == epoch:
                del self._in_flight[req.key]
        if epoch != self.epoch:
            return
        if will_retry(tile):
            self.failed += 1
            self._failed(req, tile)
        else:
            self.failures.pop(req.key, None)
            self.corrupt += tile.corrupt
        if req.resident:
            self.resident_loaded.emit(tile)
            return
        if not will_retry(tile):  # a failure is not cached: asked again, it is read again
            self.cache.put(tile)  # a corrupt chunk is (it would read the same)
        self.tile_read.emit(tile)
        if req.key in self.wanted:
            self.tile_loaded.emit(tile)
        else:
            self.dropped += 1

    # --- failed reads: tried again later, with exponential backoff (GUI thread)

    def _failed(self, req: _Request, tile: Tile) -> None:
        old = self.failures.get(req.key)
        rounds = (old.rounds if old else 0) + 1
        wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (rounds - 1))
        self.failures[req.key] = Failure(
            rounds, time.monotonic() + wait, tile.absent, req.resident, wait
        )
        self._arm_retry()

    def _arm_retry(self) -> None:
        due = [f.due for f in self.failures.values() if f.rounds <= RETRY_ROUNDS]
        if due:
            ms = max(0, int((min(due) - time.monotonic()) * 1000))
            if not self._retry_timer.isActive() or self._retry_timer.remainingTime() > ms:
                self._retry_timer.start(ms)

    def _retry_due(self) -> None:
        now = time.monotonic()
        for key, f in list(self.failures.items()):
            if f.rounds > RETRY_ROUNDS or f.due > now + 0.005:
                continue
            if not f.resident and key not in self.wanted:
                del self.failures[key]  # no longer in view: read again if it comes back
                continue
            # not again before its answer (which sets the next time) or a round's wait
            f.due = now + min(RETRY_MAX_S, RETRY_FIRST_S * 2**f.rounds)
            self.retried += 1
            if f.resident:
                self._push(_Request((2, -key.level, 0), 0, key, 0, True))
            else:
                self._push(_Request((1, 0), 0, key, self.generation, False))
        self._arm_retry()


def read_tile(
    exposure, images: dict, layout: Layout, key: TileKey, tables: dict, colour=None
) -> Tile:
    """One chunk as float32, its per-amp samples (detector tiles) and its index image if
    transfers are known. A chunk missing from the store, or that cannot be read, comes back
    ``absent`` with the reason."""
    try:
        if key.source == OVERVIEW:
            arr = exposure.overview_level(key.level)
            src = layout.overview
        else:
            arr = images[key.source].level(key.level)
            src = layout.sources[key.source]
        raw = read_chunk(arr, (key.ty, key.tx))  # tiles are the stored chunks
    except Exception as exc:  # the store is remote or broken: draw it as absent, go on
        return read_error(key, exc)
    if raw is None:
        if key.source != OVERVIEW:
            return Tile(key, None, absent="missing chunk")
        r0, r1, c0, c1 = src.tile_slices(key.level, key.ty, key.tx)  # not written yet
        raw = np.full((r1 - r0, c1 - c0), arr.fill_value, dtype=np.float32)
    data = np.asarray(raw, dtype=np.float32)
    tile = Tile(key, data)
    rects = layout.rects(key)
    if key.source != OVERVIEW:
        tile.samples = tile_samples(data, rects)
    transfers = table_for(key, tables)
    if transfers is not None:
        tile.index = apply_rects(data, rects, transfers)
        tile.generation = transfers.generation
        if colour is not None:
            tile.colour, tile.argb = colour[0], colourise(tile.index, colour[1])
    return tile
