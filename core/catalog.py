"""The exposure catalog: one SQLite file in the repository, ``REPO/catalog.sqlite``.

One row per published exposure and one row per amp of it (every column of the exposure's
``metrics`` table, and the amp's health status), so that trend plots and ``cvt check`` history
are one indexed query instead of opening hundreds of exposure stores. The stores stay the record:
the catalog is written when an exposure is published (``core.ingest`` and ``core.watch`` call
``record_exposure``) and can be rebuilt from them at any time (``rebuild``, ``cvt catalog
rebuild REPO``), e.g. for a repository made before the catalog existed.

Schema (version 1)::

    exposures(obsid PK, instrument, camera, dayobs, seqnum, mjd, time, image_type,
              exposure_time, filter, airmass, complete, n_detectors, n_expected, n_missing,
              n_failures, n_ok, n_warning, n_known, n_fail, written, software_version)
    amps(obsid, detector, amp, status, <one column per metric>)   PK (obsid, detector, amp)
    meta(key PK, value)                                           schema_version

Metric columns are added (``ALTER TABLE``) as exposures bring new ones, so an older catalog keeps
working when the metrics grow. The file is in WAL mode (readers never block the writer) and is
checkpointed after every write, so a plain copy of ``catalog.sqlite`` (``cvt serve`` serves it
with Range support) holds every published exposure: ``open_catalog`` of a URL downloads it to a
temporary file and checks it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.paths import is_url, local_path

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.sqlite"
SCHEMA_VERSION = 1
_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = ("obsid", "detector", "amp", "status")

EXPOSURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("obsid", "TEXT PRIMARY KEY"),
    ("instrument", "TEXT"),
    ("camera", "TEXT"),
    ("dayobs", "INTEGER"),
    ("seqnum", "INTEGER"),
    ("mjd", "REAL"),
    ("time", "TEXT"),
    ("image_type", "TEXT"),
    ("exposure_time", "REAL"),
    ("filter", "TEXT"),
    ("airmass", "REAL"),
    ("complete", "INTEGER"),
    ("n_detectors", "INTEGER"),
    ("n_expected", "INTEGER"),
    ("n_missing", "INTEGER"),
    ("n_failures", "INTEGER"),
    ("n_ok", "INTEGER"),
    ("n_warning", "INTEGER"),
    ("n_known", "INTEGER"),
    ("n_fail", "INTEGER"),
    ("written", "TEXT"),
    ("software_version", "TEXT"),
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS exposures ({", ".join(f"{n} {t}" for n, t in EXPOSURE_COLUMNS)});
CREATE INDEX IF NOT EXISTS exposures_by_time ON exposures (mjd);
CREATE TABLE IF NOT EXISTS amps (
    obsid TEXT NOT NULL, detector TEXT NOT NULL, amp TEXT NOT NULL, status TEXT,
    PRIMARY KEY (obsid, detector, amp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS amps_by_amp ON amps (detector, amp);
"""


class CatalogError(Exception):
    """No catalog, or one that cannot be read; the message says where and why."""


def catalog_path(repo: str | os.PathLike) -> Path:
    return Path(repo) / CATALOG_NAME


def _root(repo: str | os.PathLike) -> str | Path:
    """A repository as the catalog's functions take it: a URL without its trailing slash, or
    the local folder."""
    return os.fspath(repo).rstrip("/") if is_url(repo) else local_path(repo)


# ---------------------------------------------------------------------------------------------
# Times


def to_mjd(value) -> float | None:
    """An MJD from an MJD number, a ``datetime`` (naive means UTC) or an ISO date/time string
    (``2026-11-26``, ``2026-11-26T03:10``); None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {value!r} (an MJD or an ISO date/time)") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _MJD_EPOCH).total_seconds() / 86400.0
    raise ValueError(f"not a time: {value!r}")


def split_amp(name: str) -> tuple[str, str]:
    """``R22_S11_C07`` -> (``R22_S11``, ``C07``)."""
    detector, sep, amp = name.rpartition("_")
    if not sep or not detector or not amp:
        raise ValueError(f"not an amp name: {name!r} (e.g. R22_S11_C07)")
    return detector, amp


# ---------------------------------------------------------------------------------------------
# Writing


def connect(repo: str | os.PathLike) -> sqlite3.Connection:
    """The repository's catalog for writing (made if absent), WAL mode, schema in place."""
    path = catalog_path(local_path(repo))
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return db


def _amp_columns(db: sqlite3.Connection) -> dict[str, str]:
    return {row[1]: row[2] for row in db.execute("PRAGMA table_info(amps)")}


def _sql_value(v):
    t = type(v)
    if v is None or t is str or t is int:
        return v
    if t is float:
        return v if math.isfinite(v) else None  # SQLite has no NaN; NULL is "not measured"
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # SQLite has no NaN; NULL is "not measured"
    return v


def exposure_rows(exposure) -> tuple[dict, list[dict]]:
    """The catalog rows of an opened exposure (``core.exposure.Exposure``): its row and one per
    amp of its ``metrics`` table, with each amp's health status (``core.health``)."""
    a = exposure.attrs
    metrics = exposure.table("metrics")
    counts: dict[str, int | None] = dict.fromkeys(("ok", "warning", "known", "fail"))
    statuses: list[str | None] = []
    n_rows = len(next(iter(metrics.values()))) if metrics else 0
    if n_rows:
        try:
            from core import health

            report = health.evaluate(metrics, a.get("image_type"))
            statuses = [amp.status for amp in report.amps]
            counts.update(report.counts)
        except Exception as exc:  # health must never stop the catalog (a bad threshold file)
            log.warning("%s: no health status in the catalog: %s", exposure.obsid, exc)
    if len(statuses) != n_rows:
        statuses = [None] * n_rows
    row = {
        "obsid": exposure.obsid,
        "instrument": a.get("instrument"),
        "camera": a.get("camera"),
        "dayobs": a.get("dayobs"),
        "seqnum": a.get("seqnum"),
        "mjd": a.get("mjd"),
        "time": a.get("date_obs"),
        "image_type": a.get("image_type"),
        "exposure_time": a.get("exposure_time"),
        "filter": a.get("filter"),
        "airmass": a.get("airmass"),
        "complete": int(bool(a.get("complete"))),
        "n_detectors": len(a.get("detectors", [])),
        "n_expected": a.get("detectors_expected"),
        "n_missing": _n_missing(a),
        "n_failures": len(a.get("failures", [])),
        "n_ok": counts["ok"],
        "n_warning": counts["warning"],
        "n_known": counts["known"],
        "n_fail": counts["fail"],
        "written": a.get("written"),
        "software_version": a.get("software_version"),
    }
    amps = []
    if n_rows and "detector" in metrics and "amp" in metrics:
        names = [c for c in metrics if c not in _KEYS and _IDENT.fullmatch(c)]
        # column by column (3,216 amps x ~35 metrics of a full camera: cell by cell was 0.4 s)
        columns = {
            "obsid": [exposure.obsid] * n_rows,
            "detector": [str(v) for v in metrics["detector"]],
            "amp": [str(v) for v in metrics["amp"]],
            "status": statuses,
            **{c: np.asarray(metrics[c]).tolist() for c in names},  # NaN -> NULL in _write
        }
        keys = list(columns)
        amps = [dict(zip(keys, values)) for values in zip(*columns.values())]
    return row, amps


def _n_missing(a: dict) -> int:
    """Expected detectors not in the store: ``detectors_missing`` names them only when the
    expected ones are known by name (``core.ingest.CcdCollector.attributes``)."""
    n_present = len(a.get("detectors", []))
    expected = a.get("detectors_expected")
    if expected is None:
        return len(a.get("detectors_missing", []))
    return max(0, int(expected) - n_present)


def _write(db: sqlite3.Connection, row: dict, amps: list[dict]) -> None:
    have = _amp_columns(db)
    for amp in amps[:1]:
        for name, value in amp.items():
            if name not in have:
                kind = "TEXT" if isinstance(value, str | np.str_) else "REAL"
                db.execute(f'ALTER TABLE amps ADD COLUMN "{name}" {kind}')
                have[name] = kind
    db.execute("DELETE FROM amps WHERE obsid = ?", (row["obsid"],))
    cols = [n for n, _ in EXPOSURE_COLUMNS]
    db.execute(
        f"INSERT OR REPLACE INTO exposures ({', '.join(cols)}) "
        f"VALUES ({', '.join('?' * len(cols))})",
        [_sql_value(row.get(c)) for c in cols],
    )
    if amps:
        names = list(amps[0])
        db.executemany(
            f"INSERT INTO amps ({', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            ([_sql_value(a.get(n)) for n in names] for a in amps),
        )


def _checkpoint(db: sqlite3.Connection) -> None:
    """Copy the WAL into the main file, so a plain copy of it (HTTP) is up to date."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")


@dataclass(frozen=True)
class ExposureRecord:
    """What the catalog reads of an exposure (``exposure_rows``), from the hands that wrote it:
    its attributes and tables as published. The ingest and the watcher record an exposure this
    way instead of reading it back (opening a full camera's store and reading its metrics
    table took 0.23 s at the end of every ingest)."""

    attrs: dict
    tables: dict[str, dict[str, np.ndarray]]

    @property
    def obsid(self) -> str:
        return self.attrs["obsid"]

    def table(self, name: str) -> dict[str, np.ndarray]:
        return self.tables.get(name, {})


def record_exposure(repo: str | os.PathLike, exposure) -> None:
    """Put one published exposure (an ``Exposure`` or ``ExposureRecord``) in the repository's
    catalog, replacing what was there for it (an exposure ingested again with ``--replace``):
    recording it again leaves the same rows."""
    row, amps = exposure_rows(exposure)
    with _transaction(repo) as db:
        _write(db, row, amps)


def record_missing(repo: str | os.PathLike, obsids) -> list[str]:
    """Record those of ``obsids`` (exposures published in ``repo``, a folder or a URL) that the
    catalog lacks, each read from its store (a complete one; a store gone or still filling is
    left out), in one transaction. Returns the obsids recorded. For a writer that died between
    publishing an exposure and recording it (``core.watch`` calls this when it starts)."""
    from core.exposure import ExposureError, open_exposure

    obsids = set(obsids)
    if not obsids:
        return []  # no catalog made for nothing
    root = _root(repo)
    try:
        with open_catalog(root) as cat:
            obsids -= {r["obsid"] for r in cat.exposures()}
    except CatalogError:  # none yet: every one is missing
        pass
    found = []
    for obsid in sorted(obsids):
        try:
            exp = open_exposure(f"{root}/{obsid}.zarr")
        except (ExposureError, OSError) as exc:
            log.warning("catalog: %s not recorded: %s", obsid, exc)
            continue
        if exp.complete:
            found.append(exposure_rows(exp))
    if found:
        with _transaction(root) as db:
            for row, amps in found:
                _write(db, row, amps)
    return [row["obsid"] for row, _ in found]


def rebuild(repo: str | os.PathLike, progress=None) -> int:
    """The catalog made again from the exposure stores of a repository, in one
    transaction (readers see the old catalog until it commits). Returns the exposures listed.
    Exposures still filling (``cvt watch``: ``complete: false``) are left out; they are
    recorded when they complete."""
    from core.exposure import ExposureError, list_exposures, open_exposure

    root = _root(repo)
    names = list_exposures(root)
    rows = []
    for i, name in enumerate(names):
        try:
            exp = open_exposure(f"{root}/{name}.zarr")
        except ExposureError as exc:
            log.warning("catalog rebuild: %s", exc)
            continue
        if not exp.complete:  # still filling (cvt watch): recorded when it completes
            continue
        rows.append(exposure_rows(exp))
        if progress:
            progress(name, i + 1, len(names))
    with _transaction(root) as db:
        db.execute("DELETE FROM amps")
        db.execute("DELETE FROM exposures")
        for row, amps in rows:
            _write(db, row, amps)
    return len(rows)


@contextlib.contextmanager
def _transaction(repo):
    """A connection in one write transaction: committed (and checkpointed) when the block ends,
    rolled back if it raises. A repository in an object store (no SQLite there) has its
    catalog fetched, changed here and put back whole (one writer at a time: the ingest or the
    watcher of that repository; ``rebuild`` makes it again from the stores)."""
    if is_url(repo):
        with _object_store_copy(os.fspath(repo)) as local, _transaction(local) as db:
            yield db
        return
    db = connect(repo)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        _checkpoint(db)
    finally:
        db.close()


@contextlib.contextmanager
def _object_store_copy(repo: str):
    """A temporary folder holding the object store's catalog (or none yet), put back after."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(repo)
    key = f"{root.rstrip('/')}/{CATALOG_NAME}"
    with tempfile.TemporaryDirectory(prefix="cvt-catalog-") as tmp:
        local = Path(tmp) / CATALOG_NAME
        with contextlib.suppress(FileNotFoundError):
            local.write_bytes(fs.cat_file(key))
        yield Path(tmp)
        db = sqlite3.connect(local)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
        finally:
            db.close()
        fs.pipe_file(key, local.read_bytes())


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Catalog:
    """A catalog opened for reading (a local file, or a downloaded copy of a remote one)."""

    db: sqlite3.Connection
    source: str
    _tmp: str | None = None

    def close(self) -> None:
        self.db.close()
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def metrics(self) -> list[str]:
        """The metric columns the catalog holds (numeric ones)."""
        return [
            name
            for name, kind in _amp_columns(self.db).items()
            if name not in _KEYS and kind == "REAL"
        ]

    def exposures(
        self,
        since=None,
        until=None,
        image_type: str | None = None,
        complete: bool | None = None,
    ) -> list[dict]:
        """Exposure rows in time order (MJD, then day and sequence number)."""
        where, args = _time_filter("e", since, until, image_type)
        if complete is not None:
            where.append("e.complete = ?")
            args.append(int(complete))
        sql = "SELECT * FROM exposures e"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.mjd, e.dayobs, e.seqnum"
        return [dict(r) for r in self.db.execute(sql, args)]

    def image_types(self) -> list[str]:
        """The image types of the catalog's exposures (as their headers write them)."""
        rows = self.db.execute(
            "SELECT DISTINCT image_type FROM exposures WHERE image_type IS NOT NULL"
        )
        return sorted(r[0] for r in rows)

    def resolve_metric(self, name: str) -> str:
        """The metric column ``name`` stands for: itself; or, without its unit, the one in
        electrons (``read_noise`` is ``read_noise_e``); or the one metric it begins. Else a
        ``CatalogError`` that lists the metrics."""
        known = sorted(self.metrics())
        if name in known:
            return name
        if f"{name}_e" in known:
            return f"{name}_e"
        starting = [m for m in known if m.lower().startswith(name.lower())] if name else []
        if len(starting) == 1:
            return starting[0]
        if starting:
            raise CatalogError(
                f"{self.source}: metric {name!r} is ambiguous: {', '.join(starting)}"
            )
        raise CatalogError(
            f"{self.source}: no metric {name!r} (known: {', '.join(known) or 'none yet'})"
        )

    def query_amp(
        self,
        amp: str,
        metric: str,
        since=None,
        until=None,
        image_type: str | None = None,
    ) -> list[dict]:
        """One amp's metric (``resolve_metric``) across exposures, in time order: dicts of
        obsid, dayobs, seqnum, mjd, time, airmass, image_type, exposure_time, filter, value
        (None: not measured) and status. ``amp``: ``R22_S11_C07``."""
        detector, amp_name = split_amp(amp)
        value = f'a."{self.resolve_metric(metric)}" AS value'
        where = ["a.detector = ?", "a.amp = ?"]
        return self._amp_rows(where, [detector, amp_name], value, since, until, image_type)

    def query_detector(
        self,
        detector: str,
        metrics=(),
        since=None,
        until=None,
        image_type: str | None = None,
    ) -> list[dict]:
        """Every amp of ``detector`` (``R22_S11``) across exposures, in time order and amp
        order: dicts of the exposure's obsid, dayobs, seqnum, mjd, time, airmass, image_type,
        exposure_time, filter, then amp, status and each of ``metrics`` (by their column names,
        ``resolve_metric``)."""
        names = [self.resolve_metric(m) for m in metrics]
        columns = "".join(f', a."{m}"' for m in dict.fromkeys(names))
        return self._amp_rows(
            ["a.detector = ?"], [detector], f"a.amp{columns}", since, until, image_type, "a.amp"
        )

    def _amp_rows(
        self, where, args, columns, since, until, image_type, order: str | None = None
    ) -> list[dict]:
        more, more_args = _time_filter("e", since, until, image_type)
        sql = (
            "SELECT e.obsid, e.dayobs, e.seqnum, e.mjd, e.time, e.airmass, e.image_type, "
            f"e.exposure_time, e.filter, {columns}, a.status "
            "FROM amps a JOIN exposures e ON e.obsid = a.obsid WHERE "
            + " AND ".join([*where, *more])
            + " ORDER BY e.mjd, e.dayobs, e.seqnum"
            + (f", {order}" if order else "")
        )
        return [dict(r) for r in self.db.execute(sql, [*args, *more_args])]


def _time_filter(alias: str, since, until, image_type) -> tuple[list[str], list]:
    where: list[str] = []
    args: list = []
    lo, hi = to_mjd(since), to_mjd(until)
    if lo is not None:
        where.append(f"{alias}.mjd >= ?")
        args.append(lo)
    if hi is not None:
        where.append(f"{alias}.mjd <= ?")
        args.append(hi)
    if image_type:
        where.append(f"lower({alias}.image_type) = lower(?)")
        args.append(image_type)
    return where, args


def _download(url: str, storage_options: dict | None) -> str:
    """A remote catalog fetched whole into a temporary file (its path)."""
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("http", "https"):
        from core import remote

        fs = remote.http_filesystem(storage_options, asynchronous=False)
        path = url
    else:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fd, tmp = tempfile.mkstemp(prefix="cvt-catalog-", suffix=".sqlite")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(fs.cat_file(path))
    except FileNotFoundError:
        os.unlink(tmp)
        raise CatalogError(f"{url}: no catalog there") from None
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def open_catalog(
    repo: str | os.PathLike, storage_options: dict | None = None, attempts: int = 3
) -> Catalog:
    """The catalog of a repository, read-only: a folder, or any fsspec URL of one (``cvt serve``
    at ``http://host:port``, ``s3://bucket/repo``), whose ``catalog.sqlite`` is downloaded to a
    temporary file (deleted by ``close``). A copy caught in the middle of a checkpoint fails
    SQLite's quick check and is fetched again."""
    if is_url(repo):
        url = os.fspath(repo).rstrip("/") + "/" + CATALOG_NAME
        last = None
        for _ in range(max(1, attempts)):
            tmp = _download(url, storage_options)
            try:
                db = sqlite3.connect(f"file:{tmp}?immutable=1", uri=True)
                db.row_factory = sqlite3.Row
                if db.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                    return Catalog(db, url, tmp)
                last = "quick check failed"
                db.close()
            except sqlite3.DatabaseError as exc:
                last = str(exc)
            os.unlink(tmp)
        raise CatalogError(f"{url}: not a readable catalog ({last})")
    path = catalog_path(local_path(repo))
    if not path.is_file():
        raise CatalogError(
            f"{path}: no catalog in this repository (cvt catalog rebuild {local_path(repo)})"
        )
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        db.row_factory = sqlite3.Row
        db.execute("SELECT 1 FROM exposures LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{path}: not a readable catalog ({exc})") from None
    return Catalog(db, str(path))


def query_amp(
    repo: str | os.PathLike,
    amp: str,
    metric: str,
    since=None,
    until=None,
    image_type: str | None = None,
    storage_options: dict | None = None,
) -> list[dict]:
    """``Catalog.query_amp`` on the catalog of ``repo`` (a folder or URL)."""
    with open_catalog(repo, storage_options) as cat:
        return cat.query_amp(amp, metric, since, until, image_type)


def query_detector(
    repo: str | os.PathLike,
    detector: str,
    metrics=(),
    since=None,
    until=None,
    image_type: str | None = None,
    storage_options: dict | None = None,
) -> list[dict]:
    """``Catalog.query_detector`` on the catalog of ``repo`` (a folder or URL)."""
    with open_catalog(repo, storage_options) as cat:
        return cat.query_detector(detector, metrics, since, until, image_type)


def query_exposures(
    repo: str | os.PathLike, since=None, until=None, image_type: str | None = None
) -> list[dict]:
    with open_catalog(repo) as cat:
        return cat.exposures(since, until, image_type)
