"""``core.watch`` on files dripped into a folder as a camera writes them.

Three ComCam exposures of two CCDs each (``expect=2``): one file lands in two halves with a
pause, one never finishes (truncated), the watcher is stopped half-way through the third exposure
and a new one takes over; a junk file and a late copy land after. Every exposure must complete
exactly once, the truncated CCD be recorded with its reason, nothing be lost or duplicated, and
the stores equal (pixels, overview, metrics, sources) a batch ``ingest`` of the same files.

Then what operation brings: a restart after an outage longer than the timeout, completion by the
timeout, a file whose data (not its header) is corrupt, and ``python -m cvt watch`` killed after
publishing an exposure and killed with CCD tasks in flight on its process pool.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core import catalog
from core.camera import load_camera
from core.exposure import open_exposure
from core.ingest import ingest
from core.simulate import simulate_exposure
from core.watch import FAILURE_LOG, READY, WAITING, Watcher, check_raw_file
from tests.core.test_catalog import _all_amp_rows

ROOT = Path(__file__).resolve().parents[2]

DETECTORS = ("R22_S10", "R22_S11")
PLAN = ((1, "science"), (2, "bias"), (3, "bias"))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    out = []
    for seq, kind in PLAN:
        out.append(
            simulate_exposure(
                src / f"e{seq}",
                camera="ComCam",
                detectors=DETECTORS,
                seed=7,
                image_type=kind,
                seq=seq,
                faults=False,
                workers=2,
            )
        )
    return out


def land(src: Path, rawdir: Path, name: str | None = None) -> Path:
    """A whole file appearing at once (written aside, renamed in: how the DAQ writes)."""
    dest = rawdir / (name or src.name)
    tmp = rawdir / f".{dest.name}.part"
    shutil.copyfile(src, tmp)
    tmp.rename(dest)
    return dest


def land_in_halves(src: Path, rawdir: Path, pause: float) -> Path:
    """A file written in place in two halves with a pause between (a slow writer)."""
    data = src.read_bytes()
    dest = rawdir / src.name
    with open(dest, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(pause)
        f.write(data[len(data) // 2 :])
    return dest


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def batch(simulated, tmp_path_factory):
    """The simulated exposures through the batch ingest: what a watcher must make of them."""
    repo = tmp_path_factory.mktemp("batch")
    reports, unreadable = ingest([f for e in simulated for f in e.files], repo, workers=2)
    assert unreadable == [] and all(r.ok and not r.failures for r in reports)
    return repo


def assert_same_store(w, b) -> None:
    """Two exposures hold the same detectors, pixels, overview and tables."""
    assert w.detector_names == b.detector_names
    for name in w.detector_names:
        dw, db = w.detector(name), b.detector(name)
        assert dw.n_levels == db.n_levels
        for level in range(dw.n_levels):
            np.testing.assert_array_equal(dw.level(level)[:], db.level(level)[:])
        np.testing.assert_array_equal(dw.raw_segments(), db.raw_segments())
    for i in range(len(w.overview_attrs["factors"])):
        np.testing.assert_array_equal(w.overview_level(i)[:], b.overview_level(i)[:])
    assert w.overview_attrs == b.overview_attrs
    for table in ("metrics", "sources"):
        tw, tb = w.table(table), b.table(table)
        assert list(tw) == list(tb)
        for col in tw:
            np.testing.assert_array_equal(tw[col], tb[col])


def catalogued(repo: Path) -> dict[str, dict]:
    """The catalog's exposure rows by obsid (none when there is no catalog yet)."""
    try:
        return {r["obsid"]: r for r in catalog.query_exposures(repo)}
    except catalog.CatalogError:
        return {}


def corrupt_rice_data(path: Path) -> None:
    """Point a RICE file's first tile past its data: headers and structure stay whole (the
    watcher takes the file), the CCD task fails."""
    from astropy.io import fits

    with fits.open(path, disable_image_compression=True) as hdus:
        table = hdus[1].fileinfo()["datLoc"]  # the first segment's tile descriptors
    data = bytearray(path.read_bytes())
    data[table + 4 : table + 8] = (0x7FFFFFF0).to_bytes(4, "big")  # tile 0's heap offset
    path.write_bytes(bytes(data))
    assert check_raw_file(path)[0] == READY


class Running:
    """A watcher on its own thread, with its events."""

    def __init__(
        self, rawdir: Path, repo: Path | str, expect: int | None = 2, timeout: float = 60.0,
        **options,
    ):  # fmt: skip
        self.events: list = []
        self.stop = threading.Event()
        self.watcher = Watcher(
            rawdir, repo, expect=expect, timeout=timeout, settle=4.0, poll=0.2, workers=1,
            on_event=self.events.append, **options,
        )  # fmt: skip
        self.thread = threading.Thread(target=self.watcher.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def seen(self, kind: str, obsid: str | None = None) -> list:
        return [e for e in self.events if e.kind == kind and obsid in (None, e.obsid)]

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.watcher.errors == []


def test_partial_files_wait_and_whole_ones_are_ready(simulated, tmp_path):
    src = simulated[0].files[0]
    data = src.read_bytes()
    part = tmp_path / src.name
    part.write_bytes(data[: len(data) // 3])
    status, why = check_raw_file(part)
    assert status == WAITING and "truncated" in why
    part.write_bytes(data[: 2880 * 3 + 17])  # mid-header of a segment
    assert check_raw_file(part)[0] == WAITING
    part.write_bytes(data)
    status, info = check_raw_file(part)
    assert status == READY and info.detector == "R22_S10"
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"\x00" * 10_000)
    assert check_raw_file(junk)[0] == "bad"


def test_watch_drip_restart_and_equal_to_batch(simulated, tmp_path):
    rawdir, repo, batch = tmp_path / "raw", tmp_path / "repo", tmp_path / "batch"
    rawdir.mkdir()
    e1, e2, e3 = simulated
    first = Running(rawdir, repo)
    try:
        # exposure 1: one file at once, one written in two halves with a pause
        land(e1.files[0], rawdir)
        land_in_halves(e1.files[1], rawdir, pause=1.5)
        wait_for(lambda: first.seen("complete", e1.obsid), what="exposure 1")
        # exposure 2: one good file, one that stops half-way for good
        land(e2.files[0], rawdir)
        data = e2.files[1].read_bytes()
        (rawdir / e2.files[1].name).write_bytes(data[: int(len(data) * 0.6)])
        # exposure 3: the first CCD, then the watcher stops
        land(e3.files[0], rawdir)
        wait_for(lambda: first.seen("ccd", e3.obsid), what="exposure 3's first CCD")
        wait_for(lambda: first.seen("complete", e2.obsid), what="exposure 2")
    finally:
        first.halt()

    # what a reader sees of the exposure left filling
    partial = open_exposure(repo / f"{e3.obsid}.zarr")
    assert partial.complete is False
    assert partial.detector_names == [DETECTORS[0]]
    assert partial.detector(DETECTORS[0]).level(2).shape[0] > 0
    assert np.isfinite(partial.overview_level(3)[:]).any()
    assert partial.table("metrics") == {}

    # the rest of exposure 3 lands while no watcher runs; then junk and a late copy
    land(e3.files[1], rawdir)
    (rawdir / "junk.fits").write_bytes(b"not a FITS file at all" * 500)
    late = land(e1.files[0], rawdir, name="late_copy.fits")
    second = Running(rawdir, repo)
    try:
        wait_for(lambda: second.seen("complete", e3.obsid), what="exposure 3 after the restart")
        wait_for(lambda: second.seen("unidentified") and second.seen("late"), what="junk, late")
    finally:
        second.halt()

    # every exposure complete exactly once, by one watcher or the other; nothing redone
    done = [e.obsid for e in first.seen("complete") + second.seen("complete")]
    assert sorted(done) == sorted([e1.obsid, e2.obsid, e3.obsid])
    assert [e.obsid for e in second.seen("ccd")] == [e3.obsid]
    assert [e.obsid for e in second.seen("resumed")] == [e3.obsid]
    state = sqlite3.connect(repo / ".watch" / "state.sqlite")
    rows = dict(state.execute("SELECT obsid, status FROM exposures"))
    assert rows == {e1.obsid: "complete", e2.obsid: "complete", e3.obsid: "complete"}
    assert state.execute("SELECT count(*) FROM files WHERE result IS NOT NULL").fetchone()[0] == 0
    statuses = dict(state.execute("SELECT path, status FROM files"))
    assert statuses[str(late)] == "late"
    assert statuses[str(rawdir / "junk.fits")] == "unidentified"
    log = [json.loads(line) for line in (repo / FAILURE_LOG).read_text().splitlines()]
    assert {Path(x["file"]).name for x in log} == {"junk.fits", "late_copy.fits"}
    assert any("not a FITS file" in x["reason"] for x in log)

    # the truncated CCD is recorded with its reason, the exposure went on without it
    x2 = open_exposure(repo / f"{e2.obsid}.zarr")
    assert x2.complete and x2.detector_names == [DETECTORS[0]]
    (failure,) = x2.attrs["failures"]
    assert failure["file"].endswith(e2.files[1].name)
    assert "truncated" in failure["reason"] and "incomplete for 4 s" in failure["reason"]
    # expect=2: the two came, one failed; not the seven other ComCam detectors as well
    assert x2.attrs["detectors_missing"] == [DETECTORS[1]]
    for e in (e1, e3):
        x = open_exposure(repo / f"{e.obsid}.zarr")
        assert x.complete and x.detector_names == list(DETECTORS) and x.attrs["failures"] == []
        assert x.attrs["watch"]["latency_s"] >= 0
        assert x.attrs["detectors_missing"] == []

    # the catalog got each exposure once, missing counted against expect=2
    rows = catalogued(repo)
    assert sorted(rows) == sorted(done)
    assert {o: (r["n_expected"], r["n_missing"]) for o, r in rows.items()} == {
        e1.obsid: (2, 0),
        e2.obsid: (2, 1),
        e3.obsid: (2, 0),
    }

    # the same files through the batch ingest give the same stores
    (rawdir / "late_copy.fits").unlink()  # the batch would count it as a duplicate CCD
    ingest([rawdir], batch, workers=1)
    for e in (e1, e2, e3):
        w, b = open_exposure(repo / f"{e.obsid}.zarr"), open_exposure(batch / f"{e.obsid}.zarr")
        assert_same_store(w, b)
        assert len(w.table("metrics")["amp"]) == 16 * len(w.detector_names)
        # expect=2 (a subset: the batch expects the camera's nine); the watcher says how long
        # it waited for the truncated file
        skip = ("written", "ingest", "watch", "detectors_expected", "detectors_missing", "failures")
        assert [f["file"] for f in w.attrs["failures"]] == [f["file"] for f in b.attrs["failures"]]
        assert {k: v for k, v in w.attrs.items() if k not in skip} == {
            k: v for k, v in b.attrs.items() if k not in skip
        }
        assert w.attrs["detectors_expected"] == 2
    assert len(open_exposure(repo / f"{e1.obsid}.zarr").table("sources")) > 0


def test_restart_after_an_outage_longer_than_the_timeout(simulated, batch, tmp_path):
    """CCDs that land while no watcher runs belong to their exposure however long the outage:
    the restarted watcher looks at the folder before its timeout can complete the exposure."""
    rawdir, repo = tmp_path / "raw", tmp_path / "repo"
    rawdir.mkdir()
    e1 = simulated[0]
    first = Running(rawdir, repo)
    try:
        land(e1.files[0], rawdir)
        wait_for(lambda: first.seen("ccd", e1.obsid), what="the first CCD")
    finally:
        first.halt()
    # down for longer than the next watcher's timeout before the second file lands, and after
    time.sleep(2.5)
    land(e1.files[1], rawdir)
    time.sleep(2.5)
    second = Running(rawdir, repo, timeout=2.0)
    try:
        wait_for(lambda: second.seen("complete", e1.obsid), what="the exposure after the restart")
    finally:
        second.halt()
    assert [(e.obsid, e.detector) for e in second.seen("ccd")] == [(e1.obsid, DETECTORS[1])]
    assert second.seen("late") == [] and len(second.seen("complete")) == 1
    (done,) = second.watcher.done
    assert not done.timed_out and done.failures == []
    state = sqlite3.connect(repo / ".watch" / "state.sqlite")
    assert sorted(r[0] for r in state.execute("SELECT status FROM files")) == ["ingested"] * 2
    assert_same_store(open_exposure(done.path), open_exposure(batch / f"{e1.obsid}.zarr"))


def test_completion_by_the_timeout(simulated, tmp_path):
    """Two of ComCam's nine CCDs land and no more: the exposure completes after the timeout,
    says so, names the seven missing and reports the latency it stores. With ``expect=3`` the
    missing third cannot be named, but it is counted, not the camera's other seven."""
    e1, e2 = simulated[0], simulated[1]
    timeout = 1.5
    for e, expect, n_missing in ((e1, None, 7), (e2, 3, 1)):
        rawdir, repo = tmp_path / f"raw{e.obsid}", tmp_path / f"repo{e.obsid}"
        rawdir.mkdir()
        run = Running(rawdir, repo, expect=expect, timeout=timeout)
        try:
            for f in e.files:
                land(f, rawdir)
            wait_for(lambda run=run, e=e: run.seen("complete", e.obsid), what="the timeout")
        finally:
            run.halt()
        (done,) = run.watcher.done
        (event,) = run.seen("complete")
        x = open_exposure(done.path)
        assert done.timed_out and x.attrs["watch"]["timed_out"] is True
        assert event.info["timed_out"] is True and event.info["missing"] == n_missing
        assert x.complete and x.detector_names == list(DETECTORS)
        if expect is None:
            others = [d.name for d in load_camera("ComCam").detectors if d.name not in DETECTORS]
            assert len(others) == 7 and done.missing == others == x.attrs["detectors_missing"]
        else:
            assert done.missing == [] == x.attrs["detectors_missing"]
        # one latency: the one stored is the one reported and printed
        assert done.latency == x.attrs["watch"]["latency_s"] == event.info["latency_s"]
        assert timeout <= done.latency < timeout + 30
        row = catalogued(repo)[e.obsid]
        assert (row["n_detectors"], row["n_expected"], row["n_missing"]) == (
            2,
            expect or 9,
            n_missing,
        )


def test_a_file_whose_data_is_corrupt_fails_in_its_task(tmp_path):
    """A RICE file whose headers and structure are whole (the watcher takes it) but whose tile
    table points past its data: the CCD task fails, the failure is recorded with the file and
    the reason, and the exposure completes without it, not waiting for the timeout."""
    sim = simulate_exposure(
        tmp_path / "src", camera="ComCam", detectors=DETECTORS, seed=7, image_type="bias",
        seq=4, faults=False, compress="rice", workers=2,
    )  # fmt: skip
    bad = sim.files[1]
    corrupt_rice_data(bad)

    rawdir, repo = tmp_path / "raw", tmp_path / "repo"
    rawdir.mkdir()
    run = Running(rawdir, repo)
    try:
        for f in sim.files:
            land(f, rawdir)
        wait_for(lambda: run.seen("complete", sim.obsid), what="the exposure")
    finally:
        run.halt()
    (failed,) = run.seen("failed")
    assert failed.detector == DETECTORS[1] and "RICE tile 0" in failed.reason
    (done,) = run.watcher.done
    assert not done.timed_out
    x = open_exposure(done.path)
    assert x.complete and x.detector_names == [DETECTORS[0]]
    (failure,) = x.attrs["failures"]
    assert failure["file"] == str(rawdir / bad.name) and "RICE tile 0" in failure["reason"]
    assert x.attrs["detectors_missing"] == [DETECTORS[1]]
    row = catalogued(repo)[sim.obsid]
    assert (row["n_detectors"], row["n_failures"], row["n_missing"]) == (1, 1, 1)


def cvt_watch(rawdir: Path, repo: Path, out: Path, *extra: str, env=None) -> subprocess.Popen:
    """``python -m cvt watch`` as users start it, this checkout's code, in a session of its own
    (its pool's workers with it); what it prints goes to ``out``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with open(out, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "cvt", "watch", str(rawdir), "--repo", str(repo),
             "--expect", "2", "--poll", "0.2", *extra],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": path, **(env or {})},
            stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a ``cvt_watch`` and its pool's processes at once (a container's OOM kill, a
    power cut): its CCD tasks die mid-write."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def die_after_publishing(files, rawdir: Path, repo, out: Path, *extra: str, env=None) -> None:
    """``python -m cvt watch`` on the landed ``files``, dying (as ``kill -9`` would) right after
    the exposure's root says ``complete: true``, before its state or the catalog know."""
    for f in files:
        land(f, rawdir)
    proc = cvt_watch(
        rawdir, repo, out, "--workers", "1", *extra,
        env={**(env or {}), "CVT_TEST_WATCH_DIE_AT": "published"},
    )  # fmt: skip
    assert proc.wait(timeout=180) == 70, out.read_text()


def restarted_until_catalogued(rawdir: Path, repo, **options) -> Running:
    """A watcher started again, run until it has catalogued what it completed, and a few rounds
    more (in which nothing else may happen); halted."""
    again = Running(rawdir, repo, **options)
    try:
        wait_for(lambda: again.seen("catalogued"), what="the exposure catalogued")
        time.sleep(0.5)  # a few rounds: nothing else happens
    finally:
        again.halt()
    return again


def test_death_between_publishing_and_the_catalog(simulated, tmp_path):
    """``python -m cvt watch`` dies right after an exposure's root says ``complete: true``,
    before its state or the catalog know: the restarted watcher records it in the catalog
    (as a rebuild from the stores would) and completes nothing twice."""
    rawdir, repo = tmp_path / "raw", tmp_path / "repo"
    rawdir.mkdir()
    e1 = simulated[0]
    die_after_publishing(e1.files, rawdir, repo, tmp_path / "watch.out")
    assert open_exposure(repo / f"{e1.obsid}.zarr").complete
    assert e1.obsid not in catalogued(repo)
    state = sqlite3.connect(repo / ".watch" / "state.sqlite")
    assert state.execute("SELECT status FROM exposures").fetchall() == [("filling",)]
    state.close()

    again = restarted_until_catalogued(rawdir, repo)
    assert [e.kind for e in again.events] == ["catalogued"]
    assert again.seen("catalogued")[0].obsid == e1.obsid
    state = sqlite3.connect(repo / ".watch" / "state.sqlite")
    assert state.execute("SELECT status FROM exposures").fetchall() == [("complete",)]
    row = catalogued(repo)[e1.obsid]
    assert row["complete"] == 1 and row["n_detectors"] == 2
    amps = _all_amp_rows(repo)
    assert len(amps) == 1 + 2 * 16
    assert catalog.rebuild(repo) == 1  # what cvt catalog rebuild makes: the same
    assert _all_amp_rows(repo) == amps and catalogued(repo)[e1.obsid] == row


def _lines(path: Path, pattern: str) -> list[tuple[str, ...]]:
    """The events ``cvt watch`` printed (``HH:MM:SS <pattern>`` lines) as regex groups."""
    lines = re.finditer(rf"^\d\d:\d\d:\d\d {pattern}", path.read_text(), re.MULTILINE)
    return [m.groups() for m in lines]


def test_kill_with_tasks_in_flight_on_a_process_pool(simulated, batch, tmp_path):
    """``python -m cvt watch --workers 2`` is killed (SIGKILL, its workers with it) with CCD
    tasks in flight, and started again: every exposure completes once, equal to the batch
    ingest, no CCD lost or done twice, and nothing said complete that was not while it lay
    dead."""
    rawdir, repo = tmp_path / "raw", tmp_path / "repo"
    rawdir.mkdir()
    exposures = simulated[:2]
    out1, out2 = tmp_path / "first.out", tmp_path / "second.out"
    first = cvt_watch(rawdir, repo, out1, "--workers", "2")
    try:
        for e in exposures:
            for f in e.files:
                land(f, rawdir)
        wait_for(lambda: " ccd " in out1.read_text(), 180, "the first CCD")
    finally:
        kill_group(first)
    state = sqlite3.connect(repo / ".watch" / "state.sqlite")
    done_before = {r[0] for r in state.execute("SELECT detector || obsid FROM files")}
    state.close()
    assert 1 <= len(done_before) < 4, "no task was in flight"

    # what a reader sees meanwhile: complete only if really complete; listed CCDs whole
    for e in exposures:
        if not (repo / f"{e.obsid}.zarr").exists():
            continue
        x = open_exposure(repo / f"{e.obsid}.zarr")
        assert x.complete is (len(x.detector_names) == 2 and "metrics" in x.root)
        for name in x.detector_names:
            det = x.detector(name)
            for level in range(det.n_levels):
                assert np.isfinite(det.level(level)[:]).any()

    second = cvt_watch(rawdir, repo, out2, "--workers", "2", "--exit-when-idle", "2")
    try:
        second.wait(timeout=300)
    finally:
        kill_group(second)  # nothing left of it, whatever happened

    ccd = r"ccd (\S+) (\S+)$"
    before, after = _lines(out1, ccd), _lines(out2, ccd)
    assert len(set(after)) == len(after)
    assert {d + o for o, d in after}.isdisjoint(done_before)  # nothing done twice
    assert {d + o for o, d in after} | done_before == {
        d + e.obsid for e in exposures for d in DETECTORS
    }  # nothing lost
    assert len(before) <= len(done_before)
    completed = _lines(out1, r"(\S+) complete\b") + _lines(out2, r"(\S+) complete\b")
    assert sorted(completed) == sorted((e.obsid,) for e in exposures)
    for out in (out1, out2):
        assert _lines(out, r"(\S+ )?(late|failed|unidentified|error):") == []
    assert "Traceback" not in out2.read_text() and "WARNING" not in out2.read_text()
    state = sqlite3.connect(repo / ".watch" / "state.sqlite")
    assert set(state.execute("SELECT status FROM files")) == {("ingested",)}
    assert state.execute("SELECT count(*) FROM files").fetchone()[0] == 4
    assert set(state.execute("SELECT status FROM exposures")) == {("complete",)}
    assert sorted(catalogued(repo)) == sorted(e.obsid for e in exposures)
    for e in exposures:
        x = open_exposure(repo / f"{e.obsid}.zarr")
        assert x.complete and x.attrs["failures"] == [] and x.attrs["detectors_missing"] == []
        assert_same_store(x, open_exposure(batch / f"{e.obsid}.zarr"))
