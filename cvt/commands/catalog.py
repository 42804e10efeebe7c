"""``cvt catalog rebuild REPO``: the exposure catalog made again from the stores;
``cvt catalog list REPO``: the exposures it holds, or with ``--detector R22_S11`` every amp of
that detector in them (its health status and the ``--metric`` values)."""

from __future__ import annotations

import sys

from core.catalog import CatalogError, open_catalog, rebuild
from cvt.text import aligned, number


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=("rebuild", "list"), help="what to do")
    parser.add_argument("repo", help="repository folder (list: or URL)")
    parser.add_argument("--since", help="list: from this time (MJD or ISO)")
    parser.add_argument("--until", help="list: up to this time (MJD or ISO)")
    parser.add_argument("--image-type", help="list: only this image type")
    parser.add_argument(
        "--detector", help="list: every amp of this detector (R22_S11), one line an exposure's amp"
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        help="with --detector: show this metric too (repeatable; read_noise means read_noise_e)",
    )


def amp_table(rows: list[dict], metrics: list[str]) -> str:
    """A detector's amps across exposures as aligned text (``Catalog.query_detector`` rows)."""
    head = ["obsid", "seq", "time", "image_type", "amp", "status", *metrics]
    keys = ["obsid", "seqnum", "time", "image_type", "amp", "status", *metrics]
    return aligned([head, *[[number(r[k]) for k in keys] for r in rows]])


def run(args) -> int:
    if args.action == "rebuild":
        n = rebuild(args.repo)
        print(f"{args.repo}: catalog rebuilt, {n} exposures")
        return 0
    try:
        with open_catalog(args.repo) as cat:
            if args.detector:
                metrics = list(dict.fromkeys(cat.resolve_metric(m) for m in args.metric))
                rows = cat.query_detector(
                    args.detector, metrics, args.since, args.until, args.image_type
                )
            else:
                rows = cat.exposures(args.since, args.until, args.image_type)
    except (CatalogError, ValueError) as exc:
        print(f"cvt catalog: {exc}", file=sys.stderr)
        return 2
    if args.detector:
        if not rows:
            print(f"no amps of {args.detector} in the catalog of {args.repo}", file=sys.stderr)
            return 1
        print(amp_table(rows, metrics))
        return 0
    for r in rows:
        health = f"ok {r['n_ok']} warn {r['n_warning']} fail {r['n_fail']}"
        print(
            f"{r['obsid']}  {r['time'] or '-'}  {r['image_type'] or '-':8s} "
            f"{r['n_detectors']}/{r['n_expected']} CCDs  {health}"
        )
    return 0
