"""Ingest tasks on a Dask distributed cluster: one task per CCD, the same ``_ingest_ccd``.

``DaskExecutor`` makes an existing cluster (``distributed.Client(address)``) look like the
``concurrent.futures`` executor the ingest and the watcher already drive: ``submit`` returns a
plain ``concurrent.futures.Future`` (so ``wait(..., FIRST_COMPLETED)`` works unchanged) and
``_max_workers`` is the cluster's thread count (``core.ingest.in_flight_limit`` keeps four
CCDs a thread in flight).

What a deployment needs (README, "Deployment"): every worker runs the same CVT version (checked
when the executor starts) and sees the repository at the same path as the process that submits
(a shared filesystem), because a task writes its CCD's arrays straight into the exposure store
and sends back only small things (node metadata, overview bins, metrics). The raw files must be
readable by the workers at the paths the submitter sees, too.

Dask is optional (``pip install camera-visualization-tool[dask]``); it is imported only here,
and only when a scheduler address is given.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import Future
from contextlib import contextmanager

from core import __version__


class SchedulerError(RuntimeError):
    """The cluster cannot be used: unreachable, no Dask, or workers of another CVT version."""


def _worker_version() -> str:
    import core

    return core.__version__


class DaskExecutor:
    """A ``concurrent.futures``-like executor over a Dask distributed cluster."""

    def __init__(
        self,
        address: str | None = None,
        *,
        client=None,
        check_versions: bool = True,
        connect_timeout: float = 10.0,
    ):
        try:
            import distributed
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise SchedulerError(
                "a scheduler address needs Dask: pip install 'camera-visualization-tool[dask]'"
            ) from exc
        if client is None:
            if not address:
                raise SchedulerError("no scheduler address and no client")
            try:
                client = distributed.Client(
                    address, set_as_default=False, timeout=f"{connect_timeout}s"
                )
            except (OSError, TimeoutError) as exc:
                raise SchedulerError(f"cannot reach the Dask scheduler {address}: {exc}") from exc
            self._own_client = True
        else:
            self._own_client = False
        self.client = client
        self._lock = threading.Lock()
        self._pending: set = set()  # the Dask futures: a task is released when forgotten
        if check_versions:
            versions = self.client.run(_worker_version)
            other = {w: v for w, v in versions.items() if v != __version__}
            if other:
                self.shutdown()
                raise SchedulerError(
                    f"workers run another CVT version than this one ({__version__}): {other}"
                )

    @property
    def _max_workers(self) -> int:
        """Threads of the cluster's workers now (at least 1)."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        out: Future = Future()
        out.set_running_or_notify_cancel()
        task = self.client.submit(fn, *args, pure=False, **kwargs)
        with self._lock:
            self._pending.add(task)

        def done(f) -> None:  # runs on the client's callback thread
            with self._lock:
                self._pending.discard(f)
            try:
                out.set_result(f.result())
            except BaseException as exc:  # a task error, a lost worker, a cancellation
                out.set_exception(exc)

        task.add_done_callback(done)
        return out

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pending = list(self._pending)
        if cancel_futures and pending:
            self.client.cancel(pending)
        elif wait and pending:
            import distributed

            distributed.wait(pending)
        if self._own_client:
            self.client.close()


@contextmanager
def interrupts_held():
    """Ctrl-C (SIGINT) or SIGTERM while the block runs takes effect, as it would have, when the
    block ends; and the processes and threads the block starts never see Ctrl-C (main thread
    only): it comes to the main thread, which a signal taken by another thread does not wake.

    - A local pool starts a worker inside ``submit``, which waits for the forkserver (for its
      imports, the first second or two); interrupted there, the worker was left half-started
      and printed a traceback once the ingest had gone.
    - Ctrl-C goes to every process of the terminal's group: the forkserver, started here,
      printed its KeyboardInterrupt traceback when it came while it was still importing. It
      starts with SIGINT blocked (exec keeps the mask), and so do the workers forked from it;
      the ingest handles Ctrl-C for all of them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []

    def hold(signum, frame) -> None:  # SIGTERM, or a SIGINT that another thread took
        caught.append(signum)

    # handlers change with SIGINT blocked, so that none runs half-way through the change
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, hold)
        yield
    finally:
        for sig in reversed(old):
            signal.signal(sig, old[sig])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a held one comes in now
    if caught:
        signal.raise_signal(caught[0])


def make_executor(scheduler: str | None, workers: int | None, n_tasks: int = 2):
    """The executor of an ingest: a Dask cluster when ``scheduler`` is given, else a local
    process pool of ``workers`` (default: one per core), or None to run in this process (one
    worker or one task)."""
    if scheduler:
        return DaskExecutor(scheduler)
    from concurrent.futures import ProcessPoolExecutor

    workers = local_workers(workers, n_tasks)
    if not workers:
        return None
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=start_local_workers(), initializer=init_worker
    )


def local_workers(workers: int | None, n_tasks: int) -> int:
    """Processes of the local pool for ``n_tasks`` tasks: ``workers`` (default one per core),
    or 0 when one process or one task makes a pool pointless (the tasks run in the caller)."""
    import os

    workers = workers or os.cpu_count() or 1
    return workers if workers > 1 and n_tasks > 1 else 0


def start_local_workers():
    """Start (once; later calls return at once) the forkserver that local ingest workers fork
    from, and return its multiprocessing context. It imports the ingest and readies numba once
    (``core._preload``, ~2 s), in parallel with whatever the caller does next: ``cvt ingest``
    calls this before importing the ingest itself and reading the raw headers, and the workers
    fork with everything loaded."""
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["core._preload"])
    # the resource tracker first: it starts deaf to Ctrl-C by itself, and unblocks SIGINT in
    # this process when it has started, which inside the block below undid the block
    resource_tracker.ensure_running()
    with interrupts_held():  # the forkserver starts deaf to Ctrl-C
        forkserver.ensure_running()
    return context


def init_worker() -> None:
    """A local ingest worker: Ctrl-C is the submitting process's to handle (it lets the CCDs
    that run finish, then removes the unpublished exposure), not every worker's traceback; the
    worker ends with the process it was forked from; and freed memory is kept for the next CCD."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent()
    keep_freed_memory()


def end_with_parent() -> None:
    """End this worker when the process that started it (the ingest) ends. A pool's workers
    are forked from the forkserver, and each holds the pipe whose closing would end the
    forkserver, so an ingest killed outright (kill -9, the OOM killer) left its idle workers and
    the forkserver waiting for work forever, holding its terminal's pipes. A thread waits on the
    ingest's end of the pipe the worker was started through (multiprocessing's parent sentinel)."""
    import multiprocessing
    import os
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait_for_the_parent() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=wait_for_the_parent, name="end-with-parent", daemon=True).start()


def keep_freed_memory() -> None:
    """In an ingest worker (glibc): big arrays from the heap, and freed memory kept for the next
    CCD. By default every array over 32 MB (a CCD's segments, its level 0) is a fresh mapping,
    faulted in and zeroed page by page by the kernel and unmapped when freed, for every CCD:
    reusing the memory saved ~15 ms of a CCD's read and assembly. Elsewhere: nothing."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl has no mallopt): the default allocation
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 1 << 30)
