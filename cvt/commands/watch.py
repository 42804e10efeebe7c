"""``cvt watch RAWDIR --repo REPO``: ingest each raw CCD file as it lands (``core.watch``)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from core.distributed import SchedulerError
from core.exposure import ExposureError
from core.isr import IsrConfig
from core.watch import Watcher, WatchError, WatchEvent, latency_summary


def add_arguments(parser) -> None:
    parser.add_argument(
        "rawdir", help="folder the camera writes raw CCD files into (watched recursively)"
    )
    parser.add_argument(
        "--repo",
        required=True,
        help="repository of exposures: a folder, or a writable fsspec URL (s3://bucket/repo; "
        "credentials from the store's usual environment, e.g. the AWS variables)",
    )
    parser.add_argument(
        "--state",
        metavar="DIR",
        default=None,
        help="local folder of the watcher's state (the files handled; watch-failures.jsonl for "
        "a URL). Default: REPO/.watch for a folder, ~/.cache/cvt/watch/<hash of the URL> for "
        "a URL",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="complete an exposure after this many seconds without a new CCD (default 60)",
    )
    parser.add_argument(
        "--expect",
        type=int,
        default=None,
        help="detectors that make an exposure whole (default: the camera's: LSSTCam 205, "
        "ComCam 9, LATISS 1); for test stands and subsets",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds a file may stay incomplete before it is recorded as failed (default 30)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.5, help="seconds between looks at the folder (default 0.5)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="local processes (default: one per core)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the CCD tasks on this Dask scheduler (tcp://host:8786); its workers must "
        "see RAWDIR at the same path, and the repository (a folder at the same path, or the "
        "same object store)",
    )
    parser.add_argument(
        "--parallel-overscan",
        action="store_true",
        help="also correct each column by the parallel overscan",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="S",
        help="stop once nothing has landed or been filling for S seconds (scripts, tests)",
    )
    parser.add_argument("--quiet", action="store_true", help="only completed exposures and errors")


def printer(quiet: bool = False):
    """An ``on_event`` that prints one line per event (completions and problems always)."""

    def show(e: WatchEvent) -> None:
        stamp = time.strftime("%H:%M:%S")
        if e.kind == "complete":
            i = e.info
            how = " (timed out)" if i.get("timed_out") else ""
            print(
                f"{stamp} {e.obsid} complete{how}: {i['ccds']} CCDs, {i['failed']} failed, "
                f"{i['missing']} missing; {i['latency_s']:.1f} s after its last file",
                flush=True,
            )
        elif e.kind in ("failed", "unidentified", "late", "error"):
            where = f"{e.obsid} " if e.obsid else ""
            print(f"{stamp} {where}{e.kind}: {e.reason}", file=sys.stderr, flush=True)
        elif not quiet:
            print(f"{stamp} {e}", flush=True)

    return show


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        watcher = Watcher(
            args.rawdir,
            args.repo,
            expect=args.expect,
            timeout=args.timeout,
            settle=args.settle,
            poll=args.poll,
            workers=args.workers,
            scheduler=args.scheduler,
            config=IsrConfig(parallel=args.parallel_overscan),
            on_event=printer(args.quiet),
            state=args.state,
        )
    except (SchedulerError, ExposureError, WatchError) as exc:
        print(f"cvt watch: {exc}", file=sys.stderr)
        return 2
    if not watcher.rawdir.is_dir():
        print(f"cvt watch: {watcher.rawdir} is not a folder (yet): waiting", file=sys.stderr)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not args.quiet:
        print(f"watching {watcher.rawdir} -> {watcher.repo} (Ctrl-C to stop)", flush=True)
        print(f"state: {watcher.state_dir}; unreadable and late files: {watcher.failure_log}")
    try:
        done = watcher.run(stop, idle_exit=args.exit_when_idle)
    except KeyboardInterrupt:
        done = watcher.done
    s = latency_summary(done)
    if s["n"]:
        print(
            f"{s['n']} exposures complete; latency from last file to complete: "
            f"min {s['min']:.1f} s, median {s['median']:.1f} s, p95 {s['p95']:.1f} s, "
            f"max {s['max']:.1f} s"
        )
    if watcher.filling:
        print(f"{len(watcher.filling)} exposures still filling (a restart resumes them)")
    return 1 if watcher.errors else 0
