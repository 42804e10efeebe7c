"""Per-amp trends across exposures: the series behind ``cvt trend`` and the viewer's trend panel.

Pure query and arrays (no Qt): ``series(repo, "R22_S11_C07", "read_noise_e", vs="time")`` asks
the repository's catalog (``core.catalog``) for one amp's metric and returns it as numpy arrays
against time (MJD), sequence number or airmass, with the exposures it came from.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from core.catalog import Catalog, open_catalog

VS = ("time", "seq", "airmass")
_X_LABEL = {"time": "MJD", "seq": "sequence number", "airmass": "airmass"}
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass
class Series:
    """One amp's metric across exposures, in time order. ``y`` is NaN where the metric was not
    measured; ``x`` is NaN where the exposure has no value for the axis (no airmass)."""

    amp: str
    metric: str
    vs: str
    x: np.ndarray
    y: np.ndarray
    obsid: list[str]
    mjd: np.ndarray
    seqnum: np.ndarray
    dayobs: np.ndarray
    airmass: np.ndarray
    status: list[str | None]
    image_type: list[str | None] = field(default_factory=list)

    @property
    def x_label(self) -> str:
        if self.vs == "seq" and len(set(self.dayobs.tolist())) > 1:
            return "exposure (day, sequence order)"
        return _X_LABEL[self.vs]

    def __len__(self) -> int:
        return len(self.y)

    def finite(self) -> Series:
        """Only the points with both x and y."""
        return self._take(np.isfinite(self.x) & np.isfinite(self.y))

    def last(self, days: float | None) -> Series:
        """Only the exposures of the ``days`` up to the newest one (a repository's last night
        or week, whenever it was taken); all of them with None."""
        if days is None or not np.isfinite(self.mjd).any():
            return self
        return self._take(self.mjd >= np.nanmax(self.mjd) - days)

    def _take(self, keep: np.ndarray) -> Series:
        idx = np.flatnonzero(keep)
        return Series(
            self.amp,
            self.metric,
            self.vs,
            self.x[keep],
            self.y[keep],
            [self.obsid[i] for i in idx],
            self.mjd[keep],
            self.seqnum[keep],
            self.dayobs[keep],
            self.airmass[keep],
            [self.status[i] for i in idx],
            [self.image_type[i] for i in idx] if self.image_type else [],
        )

    def slope(self) -> float:
        """Least-squares slope of y against x (NaN with fewer than two points)."""
        f = self.finite()
        if len(f) < 2 or np.ptp(f.x) == 0:
            return float("nan")
        return float(np.polyfit(f.x, f.y, 1)[0])


def _floats(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] is None else float(r[key]) for r in rows], dtype=float)


def series(
    repo: str | os.PathLike | Catalog,
    amp: str,
    metric: str,
    vs: str = "time",
    since=None,
    until=None,
    image_type: str | None = None,
    storage_options: dict | None = None,
) -> Series:
    """``amp``'s ``metric`` (a column, or what ``Catalog.resolve_metric`` makes of it, e.g.
    ``read_noise``) across the exposures of ``repo`` (a folder, a URL, or an open ``Catalog``)
    against ``vs``: ``time`` (MJD), ``seq`` (sequence number; several nights in day,
    sequence order as 0, 1, 2 ...) or ``airmass``. ``since``/``until``: MJD or ISO time;
    ``image_type``: e.g. ``bias`` (case-insensitive)."""
    if vs not in VS:
        raise ValueError(f"vs must be one of {VS}, not {vs!r}")
    opened = nullcontext(repo) if isinstance(repo, Catalog) else open_catalog(repo, storage_options)
    with opened as cat:  # an open catalog stays open
        metric = cat.resolve_metric(metric)
        rows = cat.query_amp(amp, metric, since, until, image_type)
    rows.sort(key=lambda r: (r["mjd"] is None, r["mjd"] or 0.0, r["dayobs"] or 0, r["seqnum"] or 0))
    mjd = _floats(rows, "mjd")
    seq = np.array([r["seqnum"] if r["seqnum"] is not None else -1 for r in rows], dtype=np.int64)
    day = np.array([r["dayobs"] if r["dayobs"] is not None else 0 for r in rows], dtype=np.int64)
    airmass = _floats(rows, "airmass")
    if vs == "time":
        x = mjd
    elif vs == "airmass":
        x = airmass
    elif len(set(day.tolist())) > 1:
        order = np.lexsort((seq, day))
        x = np.empty(len(rows))
        x[order] = np.arange(len(rows))
    else:
        x = seq.astype(float)
    return Series(
        amp=amp,
        metric=metric,
        vs=vs,
        x=x,
        y=_floats(rows, "value"),
        obsid=[r["obsid"] for r in rows],
        mjd=mjd,
        seqnum=seq,
        dayobs=day,
        airmass=airmass,
        status=[r["status"] for r in rows],
        image_type=[r["image_type"] for r in rows],
    )


def sparkline(values: np.ndarray) -> str:
    """The values as one line of block characters (a space where a value is missing)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return " " * len(v)
    lo, hi = float(v[ok].min()), float(v[ok].max())
    span = hi - lo
    out = []
    for value, good in zip(v, ok):
        if not good:
            out.append(" ")
        elif span == 0:
            out.append(SPARKS[len(SPARKS) // 2])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int((value - lo) / span * len(SPARKS)))])
    return "".join(out)
