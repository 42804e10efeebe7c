"""``cvt view PATH_OR_URL``: the focal-plane viewer.

With ``--screenshot FILE.png`` it renders offscreen, writes the picture once every tile the view
needs is drawn, and exits 0; an exposure that cannot be read exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import sys

from cvt.display import COLORMAPS, LIMIT_MODES, SCOPES, STRETCHES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "exposure",
        metavar="PATH_OR_URL",
        help="an exposure store (.zarr); with --follow, a repository (folder or server URL)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="show each new exposure of the repository as it is published (Ctrl+F pauses)",
    )
    parser.add_argument("--screenshot", metavar="FILE.png", help="write the view and exit")
    parser.add_argument("--goto", metavar="NAME", help="show R22_S11 or R22_S11_C07")
    parser.add_argument("--overlay", metavar="METRIC", help="per-amp heat map of a metric")
    parser.add_argument("--size", metavar="WxH", help="view size (screenshot) or window size")
    parser.add_argument("--stretch", choices=STRETCHES)
    parser.add_argument("--limits", choices=LIMIT_MODES)
    parser.add_argument("--scope", choices=SCOPES)
    parser.add_argument("--cmap", choices=COLORMAPS)
    parser.add_argument("--tile-budget", type=int, metavar="MB", help="tile cache size")
    parser.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="screenshot time limit"
    )


def run(args: argparse.Namespace) -> int:
    from cvt.viewer.app import parse_size, run_view

    size = None
    if args.size:
        try:
            size = parse_size(args.size)
        except ValueError as exc:
            print(f"cvt view: {exc}", file=sys.stderr)
            return 2
    settings = {
        k: getattr(args, k)
        for k in ("stretch", "limits", "scope", "cmap")
        if getattr(args, k) is not None
    }
    return run_view(
        args.exposure,
        screenshot=args.screenshot,
        goto=args.goto,
        overlay=args.overlay,
        size=size,
        settings=settings,
        tile_budget_mb=args.tile_budget,
        timeout=args.timeout,
        follow=args.follow,
    )
