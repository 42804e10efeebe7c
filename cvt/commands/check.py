"""``cvt check EXPOSURE_OR_URL``: which amplifiers are out of spec, and why, without a window.

Reads the exposure's per-amp metrics table (made at ingest) and checks it against the health
thresholds of its image type (``core.health``). Prints the counts per status and the worst amps,
one line each; ``--json`` prints one entry per amp instead; ``--html FILE`` writes a
self-contained report with a focal-plane map of the amps coloured by status. Exit status: 0
when no amp fails, 1 when one does, 2 when the exposure (or the configuration) cannot be read.
Never imports Qt.
"""

from __future__ import annotations

import argparse
import html
import json
import sys

from core.exposure import ExposureError, open_exposure
from core.health import HealthConfigError, HealthReport, evaluate
from core.layout import amp_array_box

COLOURS = {"ok": "#3a9d5d", "warning": "#e8a33d", "known": "#6c8ebf", "fail": "#d9473f"}
NO_DATA = "#c8c8c8"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exposure", metavar="EXPOSURE_OR_URL", help="exposure store (path or URL)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable: one entry per amp")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--config", metavar="FILE", help="TOML thresholds over the shipped ones")
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="worst amps to list (default 20)"
    )


def summary_lines(exposure, report: HealthReport, limit: int = 20) -> list[str]:
    counts = report.counts
    n = len(report.amps)
    head = (
        f"{exposure.obsid} ({exposure.attrs.get('image_type') or 'unknown type'}, "
        f"{len(exposure.detector_names)} detectors, {n} amps): "
        + ", ".join(f"{counts[s]} {s}" for s in ("ok", "warning", "known", "fail"))
    )
    lines = [head]
    worst = report.worst()
    if worst:
        lines.append(f"worst amps ({min(limit, len(worst))} of {len(worst)} flagged):")
        lines.extend("  " + a.summary() for a in worst[:limit])
    return lines


def report_dict(exposure, report: HealthReport) -> dict:
    out = report.to_dict()
    out = {"exposure": exposure.obsid, "url": exposure.url, **out}
    return out


# ---------------------------------------------------------------------------------------------
# HTML


def amp_rects(exposure) -> list[tuple[str, str, float, float, float, float]]:
    """(detector, amp, x, y, width, height) of every amp in focal-plane pixels (lower-left)."""
    rects = []
    for name in exposure.detector_names:
        det = exposure.detector(name)
        ox, oy = det.origin
        for a in det.amps:
            r0, r1, c0, c1 = amp_array_box(a, det.ccd_shape, det.quarter_turns)
            rects.append((name, a["name"], ox + c0, oy + r0, float(c1 - c0), float(r1 - r0)))
    return rects


def focal_plane_svg(exposure, report: HealthReport, width: int = 900) -> str:
    by_amp = {(a.detector, a.amp): a for a in report.amps}
    rects = amp_rects(exposure)
    if not rects:
        return "<p>No detectors.</p>"
    x0 = min(r[2] for r in rects)
    y0 = min(r[3] for r in rects)
    x1 = max(r[2] + r[4] for r in rects)
    y1 = max(r[3] + r[5] for r in rects)
    pad = 0.01 * max(x1 - x0, y1 - y0)
    vb_w, vb_h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    height = max(1, round(width * vb_h / vb_w))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="{x0 - pad:.0f} {-(y1 + pad):.0f} {vb_w:.0f} {vb_h:.0f}">'
    ]
    stroke = max(vb_w, vb_h) / 2000
    for det, amp, x, y, w, h in rects:
        health = by_amp.get((det, amp))
        colour = COLOURS[health.status] if health else NO_DATA
        tip = health.summary() if health else f"{det}_{amp} no metrics"
        parts.append(
            f'<rect x="{x:.1f}" y="{-(y + h):.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{colour}" stroke="#222" stroke-width="{stroke:.1f}">'
            f"<title>{html.escape(tip)}</title></rect>"
        )
    for name in exposure.detector_names:  # detector outlines and names
        mine = [r for r in rects if r[0] == name]
        cx0 = min(r[2] for r in mine)
        cy0 = min(r[3] for r in mine)
        cx1 = max(r[2] + r[4] for r in mine)
        cy1 = max(r[3] + r[5] for r in mine)
        size = 0.08 * min(cx1 - cx0, cy1 - cy0)
        parts.append(
            f'<rect x="{cx0:.1f}" y="{-cy1:.1f}" width="{cx1 - cx0:.1f}" '
            f'height="{cy1 - cy0:.1f}" fill="none" stroke="#000" '
            f'stroke-width="{3 * stroke:.1f}"/>'
            f'<text x="{(cx0 + cx1) / 2:.1f}" y="{-(cy0 + cy1) / 2:.1f}" font-size="{size:.0f}" '
            f'text-anchor="middle" dominant-baseline="middle" fill="#000" '
            f'pointer-events="none">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def html_report(exposure, report: HealthReport) -> str:
    counts = report.counts
    legend = " ".join(
        f'<span class="chip" style="background:{COLOURS[s]}">{s} {counts[s]}</span>'
        for s in ("ok", "warning", "known", "fail")
    )
    rows = []
    for a in report.worst():
        reasons = "<br>".join(html.escape(f"{r.text} ({r.level})") for r in a.reasons)
        note = f"<br><i>known: {html.escape(a.note)}</i>" if a.note else ""
        rows.append(
            f'<tr><td><span class="chip" style="background:{COLOURS[a.status]}">'
            f"{a.status}</span></td><td>{html.escape(a.detector)}</td>"
            f"<td>{html.escape(a.amp)}</td><td>{reasons}{note}</td></tr>"
        )
    table = (
        "<table><tr><th>status</th><th>detector</th><th>amp</th><th>reasons</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>Every amp is within its thresholds.</p>"
    )
    attrs = exposure.attrs
    title = f"Health of {exposure.obsid}"
    facts = ", ".join(
        f"{k.replace('_', ' ')} {html.escape(str(attrs[k]))}"
        for k in ("image_type", "exposure_time", "filter", "date_obs")
        if attrs.get(k) is not None
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.chip {{ display: inline-block; padding: 0 0.5em; border-radius: 0.3em; color: #fff; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }}
svg {{ border: 1px solid #ccc; background: #fafafa; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{facts}. {len(exposure.detector_names)} detectors, {len(report.amps)} amps
(thresholds for {html.escape(report.category)} images). {legend}</p>
<p>Focal plane seen from the front, x to the right, y up; hover an amp for its status.</p>
{focal_plane_svg(exposure, report)}
<h2>Flagged amps</h2>
{table}
</body></html>
"""


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        exposure = open_exposure(args.exposure)
        table = exposure.table("metrics")
        if not table:
            raise ExposureError(f"{args.exposure}: the exposure has no per-amp metrics table")
        report = evaluate(table, exposure.attrs.get("image_type"), args.config)
    except (ExposureError, HealthConfigError, OSError, KeyError) as exc:
        print(f"cvt check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report_dict(exposure, report), allow_nan=False, indent=1))
    else:
        print("\n".join(summary_lines(exposure, report, args.limit)))
        if args.html:
            try:
                with open(args.html, "w", encoding="utf-8") as f:
                    f.write(html_report(exposure, report))
            except OSError as exc:
                print(f"cvt check: cannot write {args.html}: {exc}", file=sys.stderr)
                return 2
            print(f"report written to {args.html}")
    return 1 if report.failed else 0
