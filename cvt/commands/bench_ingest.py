"""``cvt bench ingest``: see ``core.bench.ingest``."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument(
        "--workdir", help="where to put simulated raws and stores (default: a temp dir)"
    )
    parser.add_argument(
        "--ccds", type=int, default=8, help="science CCDs for the per-CCD comparison"
    )
    parser.add_argument("--no-full", action="store_true", help="skip the full 205-CCD exposures")
    parser.add_argument("--no-rice", action="store_true", help="skip the RICE-compressed raws")
    parser.add_argument("--workers", type=int, default=None, help="processes for the full exposure")
    parser.add_argument("--keep", action="store_true", help="keep the simulated files and stores")


def run(args) -> int:
    from core.bench.ingest import run as bench

    bench(
        args.workdir,
        n_ccds=args.ccds,
        full=not args.no_full,
        rice=not args.no_rice,
        workers=args.workers,
        keep=args.keep,
    )
    return 0
