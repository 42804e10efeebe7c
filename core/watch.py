"""Rapid analysis: ingest each raw CCD file as it lands, exposure by exposure, run once.

``Watcher(rawdir, repo).run(stop)`` polls ``rawdir`` (recursively) and

- takes a file when it is **complete**: its size and mtime are the same on two polls, its
  headers identify it (``read_raw_header``) and its FITS structure holds every byte and every
  segment it promises. A file still being written (or paused half-way) is waited for; one that
  stays incomplete for ``settle`` seconds is recorded as failed, with the reason;
- ingests it with the batch ingest's own per-CCD task (``core.ingest._ingest_ccd``) on a local
  process pool, or on a Dask cluster (``scheduler``), into the exposure's store, which fills in
  place (``core.exposure.PartialExposure``: visible at once with ``complete: false``, the root
  and the overview refreshed after each batch of CCDs);
- completes the exposure (tables, whole overview, ``complete: true``, catalog row) when every
  expected detector is accounted for (ingested, or failed with its reason) or when no CCD of it
  has landed for ``timeout`` seconds (``detectors_missing`` says which). A complete exposure is
  never touched again: a late file is recorded, not ingested;
- never stops on a bad file: it goes to the exposure's ``failures``, or, when the file cannot
  even say which exposure it belongs to, to ``watch-failures.jsonl`` (in the repository folder;
  for an object store, in the state folder).

The repository is a folder or any writable fsspec URL (``s3://bucket/repo``): the exposures,
their filling and the catalog are the same in both (``PartialExposure``; the CCD tasks write
through fsspec, reaching an object store through its standard environment, e.g. the AWS
variables). State is the repository itself (which exposures are complete, which detectors a
partial one lists) plus ``state.sqlite`` in a local state folder (``REPO/.watch`` for a folder;
for a URL, ``~/.cache/cvt/watch/<hash of the URL>``; or ``state``): every file handled (path,
size, mtime, exposure, detector, outcome) and, while its exposure fills, the CCD task's small
result (metrics rows, sources, node metadata), so a restarted watcher finishes a partial exposure
exactly as if it had never stopped. The overview bins of the CCDs already in are recomputed from
their stored level 1 (the same numbers). A CCD whose task was in flight when the watcher died is
simply done again. A resumed exposure's timeout counts from the restart (CCDs that landed while
no watcher ran are its own, however long that was), and every exposure the watcher completed is
put in the catalog if it is not there (one published just before the watcher died is recorded
from its store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core import isr
from core import rawfile as rf
from core.camera import Camera, load_camera
from core.distributed import interrupts_held, make_executor
from core.exposure import (
    OverviewGrid,
    PartialExposure,
    check_writable,
    load_overview_kernels,
)
from core.ingest import (
    FITS_SUFFIXES,
    CcdCollector,
    CcdResult,
    _ingest_ccd,
    exposure_summary,
    in_flight_limit,
    ingest_ccd_here,
    record_in_catalog,
)
from core.paths import is_url, local_path, user_cache_dir
from core.rawfile import RawFileError, RawInfo, read_raw_header

log = logging.getLogger(__name__)

STATE_DIR = ".watch"
# Seconds between two refreshes of a filling exposure at least: a following viewer sees new CCDs
# within about a second, and the refreshes take little of the cores the workers need (cheap now
# that the root's JSON is kept between refreshes, they would otherwise come at every poll).
REFRESH_EVERY = 1.0
FAILURE_LOG = "watch-failures.jsonl"
READY, WAITING, BAD = "ready", "waiting", "bad"


class WatchError(Exception):
    """The watcher cannot start as asked; the message says why."""


def default_state_dir(repo: str | os.PathLike) -> Path:
    """Where the watcher of ``repo`` keeps its state: ``REPO/.watch`` for a folder; for a URL
    (an object store has no SQLite, nor appends) a folder of the user's cache named by a hash
    of the URL, beside ``core.remote``'s chunk cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if not is_url(repo):
        return local_path(repo).resolve() / STATE_DIR
    url = os.fspath(repo).rstrip("/")
    return user_cache_dir("watch", hashlib.sha256(url.encode()).hexdigest()[:16])


# ---------------------------------------------------------------------------------------------
# Is a file complete?


def _incomplete(reason: str) -> bool:
    """A reason that a file still being written gives (as opposed to a broken one)."""
    return reason.startswith(("truncated file", "corrupt or truncated gzip")) or (
        "missing segment HDUs" in reason and "truncated" in reason
    )


def check_raw_file(path: str | os.PathLike) -> tuple[str, RawInfo | str]:
    """(READY, RawInfo) for a whole raw CCD file; (WAITING, why) for one that looks like it is
    still being written; (BAD, why) for one that never will be a raw CCD file."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return WAITING, f"{path}: cannot stat: {exc.strerror}"
    if size < rf.BLOCK:
        return WAITING, f"{path}: {size} bytes, less than one FITS block"
    try:
        info = read_raw_header(path)
    except rf.GuiderStampFileError as exc:
        return BAD, str(exc)
    except RawFileError as exc:
        return (WAITING if _incomplete(exc.reason) else BAD), str(exc)
    why = rf.incomplete_reason(path, info)
    if why:
        return WAITING, f"{path}: {why}"
    return READY, info


def _is_raw_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(FITS_SUFFIXES)


def scan(rawdir: str | os.PathLike, known: set[str]):
    """(path, size, mtime) of the FITS-named files under ``rawdir`` that are not in ``known``
    (hidden files and folders are skipped: writers' temporaries)."""
    stack = [os.fspath(rawdir)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.path not in known and _is_raw_name(e.name):
                try:
                    st = e.stat()
                except OSError:
                    continue
                yield e.path, st.st_size, st.st_mtime


# ---------------------------------------------------------------------------------------------
# State


class WatchState:
    """``state.sqlite`` of the state folder: the files handled and the exposures filling.
    ``repo``: the repository it belongs to, recorded and checked (a state folder given for
    another repository is refused: its files would be taken as handled); None for the one inside
    a repository folder, which moves with it."""

    def __init__(self, folder: Path, repo: str | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            folder / "state.sqlite", isolation_level=None, timeout=30.0, check_same_thread=False
        )  # made by the caller, used by the watching thread: one at a time
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a power cut may cost a CCD, done again
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS files (
                path TEXT PRIMARY KEY, size INTEGER, mtime REAL, obsid TEXT, detector TEXT,
                status TEXT, reason TEXT, result BLOB, t_done REAL);
            CREATE INDEX IF NOT EXISTS files_by_obsid ON files (obsid);
            CREATE TABLE IF NOT EXISTS exposures (
                obsid TEXT PRIMARY KEY, camera TEXT, status TEXT, expected INTEGER,
                first_landed REAL, last_landed REAL, t_complete REAL, latency REAL);
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            """
        )
        if repo is not None:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('repo', ?)", (repo,))
            (owner,) = self.db.execute("SELECT value FROM meta WHERE key = 'repo'").fetchone()
            if owner != repo:
                self.db.close()
                raise WatchError(
                    f"{folder} is the state of the watcher of {owner}, not of {repo} "
                    "(one state folder per repository)"
                )

    def known_files(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT path FROM files")}

    def file(
        self,
        path: str,
        size: int,
        mtime: float,
        obsid: str | None,
        detector: str | None,
        status: str,
        reason: str | None = None,
        result: bytes | None = None,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, size, mtime, obsid, detector, status, reason, result, time.time()),
        )

    def files_of(self, obsid: str) -> list[tuple]:
        return list(
            self.db.execute(
                "SELECT path, mtime, detector, status, reason, result FROM files "
                "WHERE obsid = ? ORDER BY t_done",
                (obsid,),
            )
        )

    def exposure(self, obsid: str, **values) -> None:
        row = self.db.execute("SELECT obsid FROM exposures WHERE obsid = ?", (obsid,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO exposures (obsid) VALUES (?)", (obsid,))
        for key, value in values.items():
            self.db.execute(f"UPDATE exposures SET {key} = ? WHERE obsid = ?", (value, obsid))

    def filling(self) -> list[str]:
        return [
            r[0] for r in self.db.execute("SELECT obsid FROM exposures WHERE status = 'filling'")
        ]

    def forget_file(self, path: str) -> None:
        self.db.execute("DELETE FROM files WHERE path = ?", (path,))

    def forget_exposure(self, obsid: str) -> None:
        self.db.execute("DELETE FROM files WHERE obsid = ?", (obsid,))
        self.db.execute("DELETE FROM exposures WHERE obsid = ?", (obsid,))

    def complete(self) -> list[str]:
        return [
            r[0] for r in self.db.execute("SELECT obsid FROM exposures WHERE status = 'complete'")
        ]

    def completed(self, obsid: str, t_complete: float, latency: float) -> None:
        self.db.execute("BEGIN")
        self.db.execute(
            "UPDATE exposures SET status = 'complete', t_complete = ?, latency = ? WHERE obsid = ?",
            (t_complete, latency, obsid),
        )
        self.db.execute("UPDATE files SET result = NULL WHERE obsid = ?", (obsid,))
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------------------------
# The watcher


def _crash_point(name: str) -> None:
    """Where a test makes the watcher die (``CVT_TEST_WATCH_DIE_AT=name``): the process ends at
    once, as ``kill -9`` or a power cut would end it there."""
    if os.environ.get("CVT_TEST_WATCH_DIE_AT") == name:
        os._exit(70)


def _iso(t: float) -> str | None:
    if not np.isfinite(t) or t <= 0:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass
class WatchEvent:
    """What the watcher tells its caller: ``kind`` is ``created``, ``resumed``, ``ccd``,
    ``failed``, ``complete``, ``late``, ``unidentified``, ``catalogued`` (a completed exposure
    missing from the catalog, recorded at start) or ``error`` (a round that failed)."""

    kind: str
    obsid: str | None = None
    file: str | None = None
    detector: str | None = None
    reason: str | None = None
    info: dict = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.kind, self.obsid or "-", self.detector or ""]
        if self.reason:
            parts.append(self.reason)
        if self.info:
            parts.append(" ".join(f"{k}={v}" for k, v in self.info.items()))
        return " ".join(p for p in parts if p)


@dataclass
class ExposureDone:
    """An exposure the watcher completed: ``latency`` is seconds from its last file landing
    (mtime) to ``complete: true``, the ``watch.latency_s`` stored in it; ``timed_out`` when it
    completed by the timeout."""

    obsid: str
    path: Path | str  # a folder's, or the URL of an object store's
    detectors: list[str]
    missing: list[str]
    failures: list[dict]
    latency: float
    timed_out: bool
    seconds: float  # from the first file landing to complete


@dataclass
class _Candidate:
    size: int
    mtime: float
    since: float = 0.0  # when the size and mtime last changed
    reason: str = ""  # why it is not whole yet


@dataclass
class _Filling:
    obsid: str
    camera: Camera
    part: PartialExposure
    collector: CcdCollector
    summary: dict
    expected: int
    accounted: set[str] = field(default_factory=set)  # detectors ingested, failed or in flight
    failed: set[str] = field(default_factory=set)  # detectors whose file came but failed
    in_flight: int = 0
    first_landed: float = float("inf")
    last_landed: float = 0.0
    resumed: float = 0.0  # when a restarted watcher took it up: the timeout counts from then
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # overview to rewrite
    dirty: bool = True
    t_refresh: float = 0.0
    refresh_cost: float = 0.0  # seconds the last refresh took
    t_start: float = field(default_factory=time.perf_counter)

    def grow(self, by: int, bx: int, h: int, w: int) -> None:
        """The overview bins (finest level) of a new CCD, to be rewritten at the next refresh."""
        self.boxes.append((by, by + h, bx, bx + w))
        self.dirty = True


class Watcher:
    """Watches ``rawdir`` and fills exposures in ``repo`` (module docstring).

    ``expect``: detectors that make an exposure whole (default: the camera's: LSSTCam 205,
    ComCam 9, LATISS 1); ``timeout``: seconds without a new CCD after which an exposure is
    completed as it is; ``settle``: seconds a file may stay incomplete before it is failed;
    ``poll``: seconds between looks at the folder; ``workers``: local processes (default one
    per core; 1 runs the tasks in this process); ``scheduler``: a Dask scheduler address
    (``tcp://host:8786``) instead; ``executor``: any ``concurrent.futures``-like executor.
    ``on_event`` receives every ``WatchEvent``. ``repo``: a folder or a writable fsspec URL;
    ``state``: the local folder of the watcher's state (``default_state_dir``).
    """

    def __init__(
        self,
        rawdir: str | os.PathLike,
        repo: str | os.PathLike,
        *,
        expect: int | None = None,
        timeout: float = 60.0,
        settle: float = 30.0,
        poll: float = 0.5,
        workers: int | None = None,
        scheduler: str | None = None,
        executor=None,
        config: isr.IsrConfig = isr.IsrConfig(),
        on_event: Callable[[WatchEvent], None] | None = None,
        state: str | os.PathLike | None = None,
    ):
        self.rawdir = Path(rawdir).resolve()
        self.local = not is_url(repo)
        folder = local_path(repo).resolve() if self.local else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.repo: Path | str = folder
        else:
            self.repo = os.fspath(repo).rstrip("/")
            check_writable(self.repo)
        self.state_dir = Path(state).resolve() if state else default_state_dir(self.repo)
        # the failure log beside the exposures in a folder; an object store cannot append
        self.failure_log = (folder or self.state_dir) / FAILURE_LOG
        self.expect = expect
        self.timeout = float(timeout)
        self.settle = float(settle)
        self.poll = float(poll)
        self.config = config
        self.on_event = on_event
        inside = folder is not None and self.state_dir == folder / STATE_DIR  # moves with it
        self.state = WatchState(self.state_dir, None if inside else str(self.repo))
        self.known: set[str] = self.state.known_files()
        self.candidates: dict[str, _Candidate] = {}
        self.filling: dict[str, _Filling] = {}
        self.queue: list[tuple[RawInfo, float, int]] = []  # (info, mtime, size) to submit
        self.futures: dict[Future, tuple[RawInfo, float, int, _Filling]] = {}
        self.done: list[ExposureDone] = []
        self.errors: list[str] = []  # rounds that failed (the watcher went on)
        self._retries: dict[str, int] = {}
        self._limit: int | None = None  # tasks to keep submitted, asked once a round
        self._workers = workers
        self._scheduler = scheduler
        self._own_executor = executor is None
        self.executor = executor
        self._spare_grid: OverviewGrid | None = None
        # the overview's kernels now, while nothing has landed, not in the first exposure's
        # refresh (a process's first numba call readies numba: ~0.75 s)
        load_overview_kernels()
        if executor is None:
            try:
                self.executor = make_executor(scheduler, workers, n_tasks=2)
            except BaseException:
                self.state.close()
                raise
        self._resume()

    # -- events and records ----------------------------------------------------------------

    def _emit(self, kind: str, **kw) -> None:
        event = WatchEvent(kind, **kw)
        log.info("%s", event)
        if self.on_event is not None:
            self.on_event(event)

    def _log_repo_failure(self, path: str, reason: str) -> None:
        line = json.dumps({"time": time.time(), "file": path, "reason": reason})
        with open(self.failure_log, "a") as f:
            f.write(line + "\n")

    # -- restart -----------------------------------------------------------------------------

    def _resume(self) -> None:
        """Exposures left filling by an earlier run: finished if the repository says they are
        complete, forgotten (their files done again) if the store is gone, else filled on. The
        folder is looked at before any of them can time out: a CCD that landed while no watcher
        ran is then a candidate, which holds its exposure open."""
        for obsid in self.state.filling():
            attrs = self._stored(obsid)
            if attrs is None:
                self.state.forget_exposure(obsid)
                self.known = self.state.known_files()
                continue
            if attrs.get("complete"):  # published, then the watcher died
                latency = (attrs.get("watch") or {}).get("latency_s")
                self.state.completed(
                    obsid, time.time(), float("nan") if latency is None else latency
                )
                continue
            self._restore(obsid, attrs)
        self._catalogue_completed()
        if self.filling:
            self._look()

    def _catalogue_completed(self) -> None:
        """Every exposure this watcher completed is in the catalog: one published but not
        recorded (the watcher died in between, or the catalog could not be written) is recorded
        from its store, as ``cvt catalog rebuild`` would."""
        from core import catalog

        try:
            added = catalog.record_missing(self.repo, self.state.complete())
        except (sqlite3.Error, OSError, catalog.CatalogError) as exc:
            log.warning(
                "%s: completed exposures not checked against the catalog: %s", self.repo, exc
            )
            return
        for obsid in added:
            self._emit("catalogued", obsid=obsid)

    def _restore(self, obsid: str, attrs: dict) -> _Filling:
        """A partial exposure of the repository filled on: the CCD results the state holds are
        replayed (overview bins from the stored level 1); CCDs it does not hold are done again
        when their files are seen (the next root no longer lists them before that)."""
        camera = load_camera(attrs["camera"])
        e = self._new_filling(obsid, camera, PartialExposure.resume(self.repo, obsid), attrs)
        e.resumed = time.time()
        self.state.exposure(obsid, camera=camera.name, status="filling", expected=e.expected)
        for path, mtime, detector, status, reason, blob in self.state.files_of(obsid):
            if status == "ingested" and blob is None:  # cannot be replayed: done again
                self.state.forget_file(path)
                self.known.discard(path)
                continue
            e.first_landed = min(e.first_landed, mtime)
            e.last_landed = max(e.last_landed, mtime)
            if status == "ingested":
                res: CcdResult = pickle.loads(blob)
                res.overview = self._rebin(e, res)
                e.collector.add(res)
                e.accounted.add(detector)
            else:  # failed, duplicate
                e.collector.failures.append({"file": path, "reason": reason})
                if status == "failed" and detector:
                    e.accounted.add(detector)
                    e.failed.add(detector)
        grid = e.collector.grid
        e.boxes = [(0, grid.ny, 0, grid.nx)]
        e.dirty = True
        self.filling[obsid] = e
        self._emit("resumed", obsid=obsid, info={"ccds": len(e.collector.detectors)})
        return e

    def _rebin(self, e: _Filling, res: CcdResult):
        group = e.part.open_group(f"detectors/{res.detector}")
        origin = group.attrs["cvt"]["origin"]
        level = "1" if "1" in group else "0"
        data = group[level][:]
        levels = [None, data] if level == "1" else [data]
        return e.collector.grid.bin_detector(levels, tuple(origin))

    # -- exposures ------------------------------------------------------------------------------

    def _stored(self, obsid: str) -> dict | None:
        """The exposure's attributes as its root says now; None when it is not in the
        repository."""
        try:
            doc = PartialExposure(self.repo, obsid).root_document()
        except FileNotFoundError:
            return None
        return doc["attributes"]["cvt"]

    def _new_filling(
        self, obsid: str, camera: Camera, part: PartialExposure, summary: dict
    ) -> _Filling:
        names = [d.name for d in camera.detectors]
        expected = self.expect or len(names)
        keys = (
            "obsid", "instrument", "camera", "dayobs", "seqnum", "image_type", "exposure_time",
            "mjd", "filter", "airmass", "date_obs",
        )  # fmt: skip
        return _Filling(
            obsid=obsid,
            camera=camera,
            part=part,
            collector=CcdCollector(camera, self._spare_grid),
            summary={k: summary.get(k) for k in keys},
            expected=expected,
        )

    def _attributes(self, e: _Filling, complete: bool) -> dict:
        return e.collector.attributes(
            e.summary,
            complete=complete,
            seconds=time.perf_counter() - e.t_start,
            n_expected=self.expect,
            failed=e.failed,
        )

    def _exposure_for(self, info: RawInfo, mtime: float) -> _Filling | None:
        """The filling exposure of a ready file; None when the exposure is already complete
        (the file is late) or cannot be made."""
        e = self.filling.get(info.obsid)
        if e is not None:
            return e
        attrs = self._stored(info.obsid)
        if attrs is not None:
            if attrs.get("complete"):
                return None
            return self._restore(info.obsid, attrs)  # left by a run whose state was lost
        camera = load_camera(info.camera)
        summary = exposure_summary([info])
        e = self._new_filling(info.obsid, camera, None, summary)  # type: ignore[arg-type]
        e.part = PartialExposure.create(self.repo, info.obsid, self._attributes(e, False))
        self.state.exposure(
            info.obsid, camera=camera.name, status="filling", expected=e.expected,
            first_landed=mtime, last_landed=mtime,
        )  # fmt: skip
        self.filling[info.obsid] = e
        self._emit("created", obsid=info.obsid, info={"expected": e.expected})
        return e

    def _refresh(self, e: _Filling) -> None:
        t0 = time.perf_counter()
        if e.boxes:
            e.part.update_overview(e.collector.grid, e.boxes)
            e.boxes = []
        e.part.refresh(self._attributes(e, False), e.collector.nodes)
        e.dirty = False
        e.t_refresh = time.time()
        e.refresh_cost = time.perf_counter() - t0

    def _finish(self, e: _Filling, timed_out: bool) -> ExposureDone:
        c = e.collector
        e.part.update_overview(c.grid, e.boxes)  # the overview is up to date chunk by chunk
        e.boxes = []
        c.write_products(e.part.writer, overview=False)  # the tables
        attrs = self._attributes(e, True)
        now = time.time()
        latency = round(now - e.last_landed, 3)  # the one value: stored, printed, reported
        attrs["watch"] = {
            "first_landed": _iso(e.first_landed),
            "last_landed": _iso(e.last_landed),
            "latency_s": latency,
            "timed_out": timed_out,
        }
        path = e.part.publish(attrs, c.nodes)
        _crash_point("published")
        self.state.completed(e.obsid, now, latency)
        record_in_catalog(self.repo, path, attrs, c.written_tables)  # else done at the restart
        del self.filling[e.obsid]
        self._spare_grid = c.grid  # the next exposure's, emptied (exposures come one by one)
        done = ExposureDone(
            e.obsid,
            path,
            list(attrs["detectors"]),
            list(attrs["detectors_missing"]),
            list(attrs["failures"]),
            latency,
            timed_out,
            now - e.first_landed,
        )
        self.done.append(done)
        self._emit(
            "complete",
            obsid=e.obsid,
            info={
                "ccds": len(done.detectors),
                "failed": len(done.failures),
                "missing": max(0, e.expected - len(done.detectors)),
                "latency_s": latency,
                "timed_out": timed_out,
            },
        )
        return done

    # -- files ------------------------------------------------------------------------------------

    def _look(self) -> None:
        """One look at the folder: new files become candidates; candidates that stayed the same
        for two polls are checked, and the whole ones queued."""
        now = time.time()
        seen = set()
        for path, size, mtime in scan(self.rawdir, self.known):
            seen.add(path)
            c = self.candidates.get(path)
            if c is None or c.size != size or c.mtime != mtime:
                self.candidates[path] = _Candidate(size, mtime, now)
                continue
            if now - c.since < self.poll:  # unchanged on two looks at least a poll apart
                continue
            status, what = check_raw_file(path)
            if status == READY:
                del self.candidates[path]
                self._accept(path, what, size, mtime)  # type: ignore[arg-type]
            elif status == BAD:
                del self.candidates[path]
                self._reject(path, size, mtime, str(what))
            elif now - c.since >= self.settle:
                del self.candidates[path]
                self._reject(path, size, mtime, f"incomplete for {self.settle:g} s: {what}")
            else:
                c.reason = str(what)
        for path in set(self.candidates) - seen:  # removed before it was whole
            del self.candidates[path]

    def _reject(self, path: str, size: int, mtime: float, reason: str) -> None:
        """A file that will not be ingested: in its exposure's failures when its headers say
        which exposure, else in the repository's failure log."""
        self.known.add(path)
        try:
            info = read_raw_header(path)
        except RawFileError:
            info = None
        if info is None:
            self.state.file(path, size, mtime, None, None, "unidentified", reason)
            self._log_repo_failure(path, reason)
            self._emit("unidentified", file=path, reason=reason)
            return
        e = self._exposure_for(info, mtime)
        if e is None:
            self._late(path, info, size, mtime)
            return
        self.state.file(path, size, mtime, info.obsid, info.detector, "failed", reason)
        e.collector.failures.append({"file": path, "reason": reason})
        e.accounted.add(info.detector)
        e.failed.add(info.detector)
        e.last_landed = max(e.last_landed, mtime)
        e.dirty = True
        self._emit("failed", obsid=info.obsid, file=path, detector=info.detector, reason=reason)

    def _late(self, path: str, info: RawInfo, size: int, mtime: float) -> None:
        reason = f"arrived after {info.obsid} was complete; not ingested (run once)"
        self.state.file(path, size, mtime, info.obsid, info.detector, "late", reason)
        self._log_repo_failure(path, reason)
        self._emit("late", obsid=info.obsid, file=path, detector=info.detector, reason=reason)

    def _accept(self, path: str, info: RawInfo, size: int, mtime: float) -> None:
        self.known.add(path)
        e = self._exposure_for(info, mtime)
        if e is None:
            self._late(path, info, size, mtime)
            return
        e.first_landed = min(e.first_landed, mtime)
        e.last_landed = max(e.last_landed, mtime)
        self.state.exposure(info.obsid, first_landed=e.first_landed, last_landed=e.last_landed)
        if info.detector in e.accounted:
            reason = f"duplicate of another file for {info.detector}"
            self.state.file(path, size, mtime, info.obsid, info.detector, "duplicate", reason)
            e.collector.failures.append({"file": path, "reason": reason})
            e.dirty = True
            return
        e.accounted.add(info.detector)
        e.in_flight += 1
        self.queue.append((info, mtime, size))
        self._submit()  # now: the workers start while the rest of a look's files are checked

    # -- tasks -----------------------------------------------------------------------------------

    def _submit(self) -> None:
        if not self.queue:
            return
        if self._limit is None:  # once a round: a Dask cluster's size is a scheduler round trip
            self._limit = in_flight_limit(self.executor)
        while self.queue and len(self.futures) < self._limit:
            info, mtime, size = self.queue.pop(0)
            e = self.filling[info.obsid]
            grid = e.collector.grid
            args = (info.path, e.camera.name, str(e.part.path), (grid.x0, grid.y0), self.config)
            if self.executor is None:
                fut: Future = Future()
                try:
                    fut.set_result(ingest_ccd_here(*args))
                except Exception as exc:
                    fut.set_exception(exc)
            else:
                with interrupts_held():  # not while a worker is being started
                    fut = self.executor.submit(_ingest_ccd, *args)
            self.futures[fut] = (info, mtime, size, e)

    def _collect(self, timeout: float) -> int:
        """Results of the tasks that finished (waiting up to ``timeout`` for the first)."""
        if not self.futures:
            return 0
        finished, _ = wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        broken = False
        for fut in finished:
            info, mtime, size, e = self.futures.pop(fut)
            try:
                res = fut.result()
            except BrokenProcessPool:
                broken = True
                tries = self._retries.get(info.path, 0) + 1
                self._retries[info.path] = tries
                if tries < 2:
                    self.queue.insert(0, (info, mtime, size))
                    continue
                res = CcdResult(path=info.path, error=f"{info.path}: the worker process died")
            except Exception as exc:  # a task that raised: the file's failure, not ours
                res = CcdResult(path=info.path, error=f"{info.path}: {type(exc).__name__}: {exc}")
            e.in_flight -= 1
            self._record(e, info, mtime, size, res)
        if broken and self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = make_executor(self._scheduler, self._workers, n_tasks=2)
        return len(finished)

    def _record(self, e: _Filling, info: RawInfo, mtime: float, size: int, res: CcdResult) -> None:
        if res.error:
            self.state.file(info.path, size, mtime, info.obsid, info.detector, "failed", res.error)
            e.collector.add(res)
            e.failed.add(info.detector)
            e.dirty = True
            self._emit(
                "failed", obsid=e.obsid, file=info.path, detector=info.detector, reason=res.error
            )
            return
        blob = pickle.dumps(replace(res, overview=None), protocol=pickle.HIGHEST_PROTOCOL)
        self.state.file(info.path, size, mtime, info.obsid, res.detector, "ingested", None, blob)
        bx, by, sums, _ = res.overview
        e.grow(by, bx, *sums.shape)
        e.collector.add(res)
        self._emit("ccd", obsid=e.obsid, detector=res.detector)

    # -- the loop ------------------------------------------------------------------------------

    def step(self, wait_for: float = 0.0) -> None:
        """One round: collect finished tasks, refresh the exposures that changed, complete the
        whole (or timed-out) ones, look at the folder, submit."""
        self._limit = None
        self._collect(wait_for)
        now = time.time()
        for e in list(self.filling.values()):
            busy = e.in_flight > 0
            whole = len(e.accounted) >= e.expected and not busy
            deadline = max(e.last_landed, e.resumed) + self.timeout
            # a file that landed before the deadline and is not yet whole may be one of its CCDs
            quiet = (
                not busy
                and now >= deadline
                and not any(c.mtime < deadline for c in self.candidates.values())
            )
            if whole or quiet:
                self._finish(e, timed_out=not whole)
            elif e.dirty and now - e.t_refresh >= max(
                self.poll, REFRESH_EVERY, 10 * e.refresh_cost
            ):
                # at most ~10 % of the watcher's time on refreshes (a full camera's root: ~2 MB)
                self._refresh(e)
        self._look()
        self._submit()

    def run(self, stop: threading.Event | None = None, idle_exit: float | None = None):
        """Watch until ``stop`` is set (or, with ``idle_exit``, until nothing has been filling
        or waiting for that many seconds). Returns the exposures completed."""
        stop = stop or threading.Event()
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    self.step(wait_for=self.poll if self.futures else 0.0)
                except Exception as exc:  # a night's watcher keeps going; a restart redoes it
                    log.exception("watch: a round failed")
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    self._emit("error", reason=self.errors[-1])
                    stop.wait(self.poll)
                if self.futures or self.filling or self.candidates or self.queue:
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                if not self.futures:
                    stop.wait(max(0.0, self.poll - (time.monotonic() - t0)))
        finally:
            self.close()
        return self.done

    def close(self, drain: bool = True) -> None:
        """Stop: with ``drain``, the tasks in flight are waited for and recorded (and the
        exposures refreshed); without, they are abandoned (as in a crash: redone on restart)."""
        if drain:
            while self.futures:
                self._collect(1.0)
            for e in self.filling.values():
                if e.dirty:
                    self._refresh(e)
        if self.executor is not None and self._own_executor:
            self.executor.shutdown(wait=drain, cancel_futures=not drain)
            self.executor = None
        with contextlib.suppress(sqlite3.Error):
            self.state.close()


def watch(
    rawdir: str | os.PathLike,
    repo: str | os.PathLike,
    stop: threading.Event | None = None,
    idle_exit: float | None = None,
    **options,
) -> list[ExposureDone]:
    """``Watcher(rawdir, repo, **options).run(stop, idle_exit)``."""
    return Watcher(rawdir, repo, **options).run(stop, idle_exit)


def latency_summary(done: list[ExposureDone]) -> dict[str, float]:
    """min / median / p95 / max of the latencies (seconds), and how many."""
    lat = np.array([d.latency for d in done if np.isfinite(d.latency)], dtype=float)
    if lat.size == 0:
        return {"n": 0}
    return {
        "n": int(lat.size),
        "min": float(lat.min()),
        "median": float(np.median(lat)),
        "p95": float(np.percentile(lat, 95)),
        "max": float(lat.max()),
    }
