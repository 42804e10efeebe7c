"""The one-click health check: ``core.health.evaluate`` on the exposure's metrics, turned into
the rows of the health panel (failing and warning amps, with their reasons). No Qt."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

STATUS_ORDER = {"fail": 0, "warning": 1, "known": 2}  # the statuses listed (not "ok")


def evaluate_rows(exposure, metrics: Mapping | None = None) -> tuple[list[dict], str, dict]:
    """Run on a worker. Returns (rows, one-line summary, counts: amps of each status, ``ok``
    and ``amps`` included)."""
    try:
        from core.health import evaluate
    except ImportError as exc:
        raise RuntimeError(f"no health evaluation available ({exc})") from exc
    table = metrics if metrics else exposure.table("metrics")
    if not table:
        raise RuntimeError(f"{exposure.obsid} has no per-amp metrics table")
    report = evaluate(table, exposure.attrs.get("image_type"))
    rows = report_rows(report)
    rows.sort(key=lambda r: (STATUS_ORDER.get(r["status"], 9), r["detector"], r["amp"]))
    counts = {**report.counts, "amps": len(report.amps)}
    summary = (
        f"{exposure.obsid}: {counts['fail']} failing, {counts['warning']} warning, "
        f"{counts['known']} known problem amps of {counts['amps']}"
    )
    return rows, summary, counts


def report_rows(report) -> list[dict]:
    """Failing and warning amps of a ``HealthReport``: dicts with status, detector, amp, reasons."""
    rows = []
    for entry in _entries(report):
        status = str(_get(entry, "status", "")).lower()
        if status not in STATUS_ORDER:
            continue
        reasons = _get(entry, "reasons", None)
        if reasons is None:
            reasons = _get(entry, "reason", "")
        if not isinstance(reasons, str):
            reasons = "; ".join(_reason_text(r) for r in reasons)
        rows.append(
            {
                "status": status,
                "detector": str(_get(entry, "detector", "")),
                "amp": str(_get(entry, "amp", "")),
                "reasons": reasons,
            }
        )
    return rows


def _entries(report) -> Iterable:
    for name in ("amps", "results", "rows", "entries"):
        value = getattr(report, name, None)
        if value is not None:
            return value() if callable(value) else value
    return report


def _get(entry, name: str, default=None):
    if isinstance(entry, Mapping):
        return entry.get(name, default)
    return getattr(entry, name, default)


def _reason_text(reason) -> str:
    if isinstance(reason, str):
        return reason
    for name in ("message", "text", "reason"):
        value = _get(reason, name)
        if value:
            return str(value)
    return str(reason)
