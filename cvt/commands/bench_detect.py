"""``cvt bench-detect`` (``cvt bench detect``): ``core.detect`` against SEP on simulated frames
with known truth; see ``core.bench.detect``. SEP is optional and imported only here."""

from __future__ import annotations

import argparse
import os
import sys


def _size(text: str) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be ROWSxCOLUMNS, got {text!r}") from None
    if ny < 64 or nx < 64:
        raise argparse.ArgumentTypeError("size must be at least 64x64")
    return ny, nx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=2, help="simulated frames (default 2)")
    parser.add_argument(
        "--size", type=_size, default=(4000, 4072), metavar="ROWSxCOLS",
        help="frame size, rows x columns (default 4000x4072, an ITL CCD)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--stars", type=int, default=3000, help="stars per frame (default 3000)")
    parser.add_argument("--fwhm", type=float, default=4.0, help="PSF FWHM in pixels (default 4)")
    parser.add_argument("--psf", choices=("gaussian", "moffat"), default="gaussian")
    parser.add_argument(
        "--thresh", type=float, default=5.0, help="threshold, filtered sigmas (default 5)"
    )


def run(args: argparse.Namespace) -> int:
    # single-threaded for both sides: SEP is serial C, our kernels have no prange; this only
    # keeps any BLAS or OpenMP pool out of the way
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from core.bench.detect import MissingDependency, benchmark, format_table

    try:
        ours, sep, sep_nodeblend, info = benchmark(
            args.frames, args.size, args.seed, thresh=args.thresh, fwhm=args.fwhm,
            psf=args.psf, n_stars=args.stars,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )  # fmt: skip
    except MissingDependency as exc:
        print(f"cvt bench detect: {exc}", file=sys.stderr)
        return 2
    print(format_table(ours, sep, sep_nodeblend, info=info))
    return 0
