"""``cvt ingest``: raw CCD files (or folders of them) to exposure stores in a repository."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from core.distributed import SchedulerError, local_workers, start_local_workers
from cvt.cli import interrupt


def add_arguments(parser) -> None:
    parser.add_argument(
        "inputs", nargs="+", help="raw FITS files or folders (searched recursively)"
    )
    parser.add_argument("--repo", required=True, help="repository folder of exposures")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="write an exposure again even if it is already in the repository",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: one per core)"
    )
    parser.add_argument(
        "--parallel-overscan",
        action="store_true",
        help="also correct each column by the parallel overscan",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the CCD tasks on this Dask scheduler (tcp://host:8786); its workers must "
        "see the raw files and the repository at the same paths",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    # a kill (SIGTERM) ends the ingest as Ctrl-C does: the running CCDs end, the exposure being
    # written is removed unpublished, the ones already published stay
    signal.signal(signal.SIGTERM, interrupt)
    if not args.scheduler and local_workers(args.workers, 2 if _several(args.inputs) else 1):
        # the local workers' forkserver imports the ingest (~2 s) while this process does too
        # and reads the headers: the first CCDs start ~1 s sooner
        start_local_workers()
    from core.ingest import ingest
    from core.isr import IsrConfig
    from cvt.progress import Progress

    progress = None if args.quiet else Progress()
    config = IsrConfig(parallel=args.parallel_overscan)
    try:
        reports, unreadable = ingest(
            args.inputs,
            args.repo,
            replace=args.replace,
            workers=args.workers,
            config=config,
            progress=progress,
            scheduler=args.scheduler,
        )
    except SchedulerError as exc:
        print(f"cvt ingest: {exc}", file=sys.stderr)
        return 2
    for bad in unreadable:
        print(f"{bad['file']}: {bad['reason']}", file=sys.stderr)
    for r in reports:
        if r.ok:
            gb = r.raw_bytes / 1e9
            print(
                f"{r.obsid}: {len(r.detectors)} CCDs in {r.seconds:.1f} s "
                f"({len(r.detectors) / max(r.seconds, 1e-9):.1f} CCD/s, {gb / max(r.seconds, 1e-9):.2f} GB/s raw) "
                f"-> {r.path}"
            )
        for f in r.failures:
            where = f["file"]
            reason = f["reason"]
            print(reason if reason.startswith(where) else f"{where}: {reason}", file=sys.stderr)
    if not reports and not unreadable:
        print("no raw FITS files found in " + " ".join(args.inputs), file=sys.stderr)
        return 2
    failed = any(not r.ok or r.failures for r in reports) or unreadable
    return 1 if failed else 0


def _several(inputs: list[str]) -> bool:
    """More than one raw file, perhaps (a folder may hold one): a pool is worth starting."""
    return len(inputs) > 1 or Path(inputs[0]).is_dir()
