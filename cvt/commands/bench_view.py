"""``cvt bench-view PATH``: the viewer's scripted pan/zoom session, offscreen, measured.

Fit, fly to a CCD, to an amp, to single pixels, drag across several CCDs, zoom back out by
wheel steps, fit. Prints the time to the first whole-focal-plane frame, the longest GUI-thread
stall (5 ms heartbeat), tiles per second and peak RSS. A benchmark, not a test: use a full
exposure (``cvt simulate`` + ``cvt ingest``).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exposure", metavar="PATH_OR_URL", help="an exposure store (.zarr)")
    parser.add_argument("--size", default="1600x1000", metavar="WxH", help="view size")
    parser.add_argument("--tile-budget", type=int, default=512, metavar="MB")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per step")


def run(args: argparse.Namespace) -> int:
    from cvt.viewer.app import parse_size
    from cvt.viewer.bench import format_result, run_bench

    try:
        size = parse_size(args.size)
    except ValueError as exc:
        print(f"cvt bench-view: {exc}", file=sys.stderr)
        return 2
    print(f"cvt bench-view {args.exposure} ({size[0]}x{size[1]}, offscreen)")
    result = run_bench(args.exposure, size, args.tile_budget, args.timeout)
    if result.error:
        print(f"cvt bench-view: cannot open {args.exposure}: {result.error}", file=sys.stderr)
        return 2
    print()
    print(format_result(result))
    return 0 if all(s.settled for s in result.steps) else 1
