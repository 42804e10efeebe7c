"""``cvt trend REPO --amp R22_S11_C07 --metric read_noise_e``: one amp's metric across exposures.

Prints the series as a table and a sparkline; ``--png FILE`` also draws it (pyqtgraph, offscreen).
The numbers come from the repository's catalog (``core.trend``, ``core.catalog``); REPO may be a
folder or a URL (``cvt serve``), whose catalog is fetched once.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import UTC, datetime, timedelta

from core.catalog import CatalogError, open_catalog
from core.trend import VS, Series, series, sparkline
from cvt.text import aligned, number

_STATUS_COLOUR = {"ok": (60, 170, 90), "warning": (240, 160, 30), "known": (120, 120, 200)}
_FAIL_COLOUR = (220, 50, 50)


def add_arguments(parser) -> None:
    parser.add_argument("repo", help="repository folder or URL")
    parser.add_argument("--amp", help="the amp, e.g. R22_S11_C07")
    parser.add_argument(
        "--metric",
        help="a metric column, e.g. read_noise_e; or without its unit (read_noise: in electrons), "
        "or the start of one name",
    )
    parser.add_argument("--vs", choices=VS, default="time", help="x axis (default: time)")
    parser.add_argument("--since", help="from this time (MJD or ISO, e.g. 2026-11-26T00:00)")
    parser.add_argument("--until", help="up to this time (MJD or ISO)")
    parser.add_argument("--image-type", help="only exposures of this image type (bias, flat ...)")
    parser.add_argument("--png", metavar="FILE", help="also draw the trend into this PNG")
    parser.add_argument(
        "--metrics", action="store_true", help="list the metrics the catalog holds and exit"
    )


def _time(mjd: float) -> str:
    if not math.isfinite(mjd):
        return "-"
    t = datetime(1858, 11, 17, tzinfo=UTC) + timedelta(days=float(mjd))
    return t.strftime("%Y-%m-%d %H:%M:%S")


def table(s: Series) -> str:
    """The series as aligned text, one exposure a line."""
    head = ["obsid", "seq", "time (UTC)", "airmass", s.metric, "status"]
    rows = [
        [
            s.obsid[i],
            str(int(s.seqnum[i])),
            _time(s.mjd[i]),
            number(float(s.airmass[i])),
            number(float(s.y[i])),
            s.status[i] or "-",
        ]
        for i in range(len(s))
    ]
    return aligned([head, *rows])


def render_png(s: Series, path: str, size: tuple[int, int] = (1000, 500)) -> None:
    """Draw the series with pyqtgraph offscreen (no window) and export it as a PNG."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import numpy as np
    import pyqtgraph as pg
    from pyqtgraph.exporters import ImageExporter

    app = pg.mkQApp()  # no global pyqtgraph options: a viewer may share this process
    f = s.finite()
    axis = {}
    x = f.x
    if s.vs == "time":
        axis = {"bottom": pg.DateAxisItem(orientation="bottom", utcOffset=0)}
        x = (f.x - 40587.0) * 86400.0  # MJD to Unix seconds
    widget = pg.PlotWidget(axisItems=axis)
    try:
        widget.resize(*size)
        widget.show()  # offscreen: lays the plot out at its size
        app.processEvents()
        plot = widget.getPlotItem()
        widget.setBackground("w")
        for name in ("left", "bottom"):
            plot.getAxis(name).setPen("k")
            plot.getAxis(name).setTextPen("k")
        plot.setTitle(f"{s.amp}  {s.metric}", color="k")
        plot.setLabel("left", s.metric, color="k")
        plot.setLabel("bottom", "time (UTC)" if s.vs == "time" else s.x_label, color="k")
        plot.showGrid(x=True, y=True, alpha=0.3)
        if len(f):
            order = np.argsort(x)
            plot.plot(x[order], f.y[order], pen=pg.mkPen((90, 90, 90), width=1.5), antialias=True)
            brushes = [pg.mkBrush(*_STATUS_COLOUR.get(st or "ok", _FAIL_COLOUR)) for st in f.status]
            plot.addItem(
                pg.ScatterPlotItem(x=x, y=f.y, size=8, brush=brushes, pen=None, antialias=True)
            )
        app.processEvents()
        exporter = ImageExporter(plot)
        exporter.parameters()["width"] = size[0]
        exporter.export(path)
    finally:
        widget.close()
        widget.deleteLater()


def run(args) -> int:
    try:
        if args.metrics:
            with open_catalog(args.repo) as cat:
                print("\n".join(sorted(cat.metrics())))
            return 0
        if not args.amp or not args.metric:
            print(
                "cvt trend: --amp and --metric are needed (--metrics lists them)", file=sys.stderr
            )
            return 2
        s = series(
            args.repo,
            args.amp,
            args.metric,
            vs=args.vs,
            since=args.since,
            until=args.until,
            image_type=args.image_type,
        )
    except (CatalogError, ValueError) as exc:
        print(f"cvt trend: {exc}", file=sys.stderr)
        return 2
    if not len(s):
        print(f"no exposures with {args.amp} in the catalog of {args.repo}", file=sys.stderr)
        return 1
    print(table(s))
    f = s.finite()
    lo, hi = (float(f.y.min()), float(f.y.max())) if len(f) else (math.nan, math.nan)
    slope = s.slope()
    per = {"time": "per day", "seq": "per exposure", "airmass": "per unit airmass"}[s.vs]
    print(f"\n{sparkline(s.y)}  {number(lo)} .. {number(hi)}  ({len(s)} exposures)")
    if math.isfinite(slope):
        print(f"slope {number(float(slope))} {per}")
    if args.png:
        render_png(s, args.png)
        print(f"-> {args.png}")
    return 0
