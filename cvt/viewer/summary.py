"""The exposure summary dock: what the exposure's attributes say about it (instrument, OBSID,
when it was taken, which detectors came in and which did not, every CCD the ingest could not
take and why), what of the store cannot be read, and the health counts once a check has run:
what one wants to know before trusting a picture."""

from __future__ import annotations

import os

from PySide6.QtWidgets import QPlainTextEdit

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)


def summary_lines(
    attrs: dict, problems: dict[str, str] | None = None, health: dict | None = None
) -> list[tuple[str, str]]:
    """(label, text) rows of an exposure's summary: its attributes (``core.exposure``'s
    format), ``problems`` (what cannot be read: name -> why) and ``health`` counts."""

    def get(key: str, fmt: str = "{}") -> str:
        value = attrs.get(key)
        if value is None or value == "":
            return "—"
        try:
            return fmt.format(value)
        except (TypeError, ValueError):  # not the type the format says: shown as it is
            return str(value)

    present = list(attrs.get("detectors") or [])
    expected = attrs.get("detectors_expected")
    missing = list(attrs.get("detectors_missing") or [])
    of = f" of {expected}" if expected is not None else ""
    state = "complete" if attrs.get("complete") else f"filling ({len(present)}{of} so far)"
    rows = [
        ("exposure", f"{get('obsid')}   {state}"),
        ("instrument", f"{get('instrument')} ({get('camera')})"),
        ("day obs", f"{get('dayobs')}   seq {get('seqnum')}"),
        ("image type", get("image_type")),
        ("exposure time", get("exposure_time", "{:g} s")),
        ("filter", get("filter")),
        ("airmass", get("airmass", "{:.3f}")),
        ("date", f"{get('date_obs')}   MJD {get('mjd', '{:.5f}')}"),
        ("detectors", f"{len(present)}{of} present"),
        ("missing", f"{len(missing)}: {', '.join(missing)}" if missing else "none"),
    ]
    failures = list(attrs.get("failures") or [])
    for f in failures:
        label = "warning" if f.get("detector_kept") else "failed"
        rows.append((label, f"{os.path.basename(str(f.get('file', '')))}: {f.get('reason', '')}"))
    if not failures:
        rows.append(("failures", "none"))
    for what, why in (problems or {}).items():
        rows.append(("unreadable", f"{what}: {why}"))
    if health:
        rows.append(
            (
                "health",
                f"{health['fail']} failing, {health['warning']} warning, {health['known']} known,"
                f" {health['ok']} ok of {health['amps']} amps",
            )
        )
    else:
        rows.append(("health", "not checked (Health check)"))
    return rows


class SummaryPanel(QPlainTextEdit):
    """The summary as text one can select and copy."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setPlainText("no exposure")

    def set_summary(self, rows: list[tuple[str, str]]) -> None:
        self._set_text("\n".join(f"{label:<14}{text}" for label, text in rows))

    def set_sections(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        """Several exposures' summaries (compare mode), each under its heading."""
        self._set_text(
            "\n\n".join(
                "\n".join([heading, *(f"{label:<14}{text}" for label, text in rows)])
                for heading, rows in sections
            )
        )

    def _set_text(self, text: str) -> None:
        if text != self.toPlainText():  # a blink that changes nothing keeps the selection
            self.setPlainText(text)
