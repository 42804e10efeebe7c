"""``cvt catalog rebuild REPO``: the exposure catalog made again from the stores;
``cvt catalog list REPO``: the exposures it holds."""

from __future__ import annotations

import sys

from core.catalog import CatalogError, open_catalog, rebuild


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=("rebuild", "list"), help="what to do")
    parser.add_argument("repo", help="repository folder (list: or URL)")
    parser.add_argument("--since", help="list: from this time (MJD or ISO)")
    parser.add_argument("--until", help="list: up to this time (MJD or ISO)")
    parser.add_argument("--image-type", help="list: only this image type")


def run(args) -> int:
    if args.action == "rebuild":
        n = rebuild(args.repo)
        print(f"{args.repo}: catalog rebuilt, {n} exposures")
        return 0
    try:
        with open_catalog(args.repo) as cat:
            rows = cat.exposures(args.since, args.until, args.image_type)
    except (CatalogError, ValueError) as exc:
        print(f"cvt catalog: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        health = f"ok {r['n_ok']} warn {r['n_warning']} fail {r['n_fail']}"
        print(
            f"{r['obsid']}  {r['time'] or '-'}  {r['image_type'] or '-':8s} "
            f"{r['n_detectors']}/{r['n_expected']} CCDs  {health}"
        )
    return 0
