"""``cvt view [PATH_OR_URL]``: the focal-plane viewer (no path: an empty window, File > Open).

With ``--screenshot FILE.png`` it renders offscreen, writes the picture once every tile the view
needs is drawn, and exits 0 (parts it could not read, such as corrupt chunks, are named on
stderr); an exposure that cannot be read exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import sys

from cvt.display import COLORMAPS, LIMIT_MODES, SCOPES, STRETCHES

EPILOG = """\
keys: wheel or +/- zoom, drag or arrows pan, F fit; B blink A/B, Shift+B auto-blink,
Ctrl+B side by side; O overscan dock; Ctrl+O open an exposure, Ctrl+U open a URL,
Ctrl+Shift+R open a repository (its latest exposure), Ctrl+Left/Right/L previous/next/latest.
menus: File (Open exposure / URL / repository, Export view as PNG), View (Exposure summary,
histogram, health, FITS header, Show overscan), Compare (Compare with exposure / URL, Blink,
Auto-blink, interval, Side by side, Stop comparing). The toolbar switches outlines, labels,
sources and health marks and picks the heat map's metric. The status bar reads out the
focal-plane position, raft/CCD/amp, CCD and amp pixel, corrected and raw ADU (or why there is
no data), and RA/Dec where the headers allow; it names what of the exposure is unreadable
(a corrupt chunk is drawn hatched and not read again; a server fault is retried).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "exposure",
        metavar="PATH_OR_URL",
        nargs="?",
        help="an exposure store (.zarr); with --follow, a repository (folder or server URL); "
        "without it, an empty window (File > Open)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="show each new exposure of the repository as it is published (Ctrl+F pauses)",
    )
    parser.add_argument("--screenshot", metavar="FILE.png", help="write the view and exit")
    parser.add_argument(
        "--compare",
        metavar="PATH_OR_URL",
        help="a second exposure B to blink against (key B) or show side by side (Ctrl+B)",
    )
    parser.add_argument(
        "--blink",
        type=float,
        metavar="S",
        help="with --compare: blink A and B every S seconds",
    )
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
    needs = (args.screenshot, args.compare, args.goto, args.overlay, args.follow)
    if args.exposure is None and any(needs):
        print(
            "cvt view: --screenshot, --compare, --goto, --overlay and --follow need an exposure",
            file=sys.stderr,
        )
        return 2
    if args.blink is not None and not (args.compare and 0.05 <= args.blink <= 600):
        print("cvt view: --blink S needs --compare and 0.05 <= S <= 600", file=sys.stderr)
        return 2
    settings = {
        k: getattr(args, k)
        for k in ("stretch", "limits", "scope", "cmap")
        if getattr(args, k) is not None
    }
    return run_view(
        args.exposure,
        screenshot=args.screenshot,
        compare=args.compare,
        blink=args.blink,
        goto=args.goto,
        overlay=args.overlay,
        size=size,
        settings=settings,
        tile_budget_mb=args.tile_budget,
        timeout=args.timeout,
        follow=args.follow,
    )
