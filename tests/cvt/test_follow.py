"""Following a repository in the real (offscreen) window: a local folder and ``cvt serve`` as
users start it (a subprocess). New exposures are published by the real ingest and the real
watcher while the window follows; nothing is mocked."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from core import remote
from core.exposure import open_exposure

pytestmark = pytest.mark.gui

FIRST = "MC_O_20261125_000001"
SECOND = "MC_O_20261125_000002"
THIRD = "MC_O_20261125_000003"
FOURTH = "MC_O_20261125_000004"


@pytest.fixture(scope="module")
def raws(tmp_path_factory):
    """Raw files of three more exposures (one CCD each: seq 2 and 3; two CCDs: seq 4)."""
    from core.simulate import simulate_exposure

    root = tmp_path_factory.mktemp("follow-raw")
    out = {}
    for seq, dets in ((2, ["R22_S11"]), (3, ["R22_S12"]), (4, ["R22_S11", "R22_S12"])):
        sim = simulate_exposure(
            root / f"e{seq}", detectors=dets, seed=seq, seq=seq, faults=False, workers=1
        )
        out[sim.obsid] = sorted(sim.files)
    assert set(out) == {SECOND, THIRD, FOURTH}
    return out


@pytest.fixture(autouse=True)
def private_chunk_cache(tmp_path):
    old = remote.configure(cache_dir=tmp_path / "chunk-cache")
    yield
    remote.restore(old)


def publish_copy(src: Path, repo: Path, obsid: str) -> None:
    """An exposure published as the ingest does: written aside (hidden), renamed in."""
    tmp = repo / f".{obsid}.zarr.partial-test"
    shutil.copytree(src, tmp)
    tmp.rename(repo / f"{obsid}.zarr")


class Background:
    """``fn`` on a thread (the window's event loop keeps running); when it finished."""

    def __init__(self, fn, *args, **kw):
        self.done_at: float | None = None
        self.error: BaseException | None = None

        def run():
            try:
                fn(*args, **kw)
            except BaseException as exc:  # reported by join()
                self.error = exc
            self.done_at = time.perf_counter()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout=120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background job did not finish"
        if self.error is not None:
            raise self.error


def ingest_into(repo: Path, files) -> None:
    from core.ingest import ingest

    reports, bad = ingest(list(files), repo, workers=1)
    assert not bad and all(r.ok for r in reports), (bad, reports)


def follow_and_publish(qtbot, w, repo_path: Path, raws, *, via: str) -> dict:
    """The window follows; exposure 2 is ingested -> it switches; paused, exposure 3 is
    ingested -> it stays, and counts it; resumed -> it jumps to 3. Returns timings."""
    # it opens the newest exposure at once
    qtbot.waitUntil(lambda: w.url is not None and w.url.endswith(f"{FIRST}.zarr"), timeout=20000)
    qtbot.waitUntil(lambda: w.exposure is not None and not w._opening, timeout=20000)
    assert w.follow_controls.action.isChecked() and w.follower.active
    qtbot.waitUntil(lambda: w.follower.known is not None, timeout=20000)
    qtbot.wait(300)

    job = Background(ingest_into, repo_path, raws[SECOND])
    with qtbot.waitSignal(w.opened, timeout=60000, check_params_cb=lambda e: e.obsid == SECOND):
        pass
    t_opened = time.time()
    job.join()
    # published when renamed into place (a rename sets the folder's ctime)
    switch = t_opened - os.stat(repo_path / f"{SECOND}.zarr").st_ctime
    assert w.url.endswith(f"{SECOND}.zarr") and w.exposure.obsid == SECOND
    assert w.windowTitle().endswith(SECOND)

    # paused: a new exposure is counted, not shown
    w.follow_controls.action.trigger()  # the toolbar button (Ctrl+F)
    assert w.follower.paused and not w.follow_controls.action.isChecked()
    Background(ingest_into, repo_path, raws[THIRD]).join()
    qtbot.waitUntil(lambda: w.follower.pending == [THIRD], timeout=30000)
    assert w.follow_controls.action.text() == "follow (1 new)"
    assert "1 newer exposure" in w.follow_controls.label.text()
    qtbot.wait(500)
    assert w.exposure.obsid == SECOND and w.url.endswith(f"{SECOND}.zarr")
    # resumed: it jumps to the newest
    with qtbot.waitSignal(w.opened, timeout=30000) as opened:
        w.follow_controls.action.trigger()
    assert opened.args[0].obsid == THIRD and not w.follower.paused
    assert w.follower.pending == [] and w.follow_controls.action.text() == "following"
    print(f"\nswitch to a new exposure ({via}): opened {switch:.2f} s after it was published")
    return {"switch": switch}


def test_follow_a_local_folder_switches_pauses_and_resumes(viewer, qtbot, sim_exposure, raws,
                                                             tmp_path):  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_copy(Path(sim_exposure[0]), repo, FIRST)
    w = viewer()
    w.follower.interval = 0.2
    assert w.follow(repo)
    t = follow_and_publish(qtbot, w, repo, raws, via="local folder")
    assert t["switch"] < 10
    # stepping back to an earlier exposure pauses following: an arrival no longer takes it away
    with qtbot.waitSignal(w.opened, timeout=30000) as opened:
        w.navigate(-1)
    assert opened.args[0].obsid == SECOND
    assert w.follower.paused and not w.follow_controls.action.isChecked()
    Background(ingest_into, repo, raws[FOURTH]).join()
    qtbot.waitUntil(lambda: w.follower.pending == [FOURTH], timeout=30000)
    qtbot.wait(500)
    assert w.exposure.obsid == SECOND


def test_follow_a_filling_exposure_refreshes_as_ccds_arrive(viewer, qtbot, sim_exposure, raws,
                                                             tmp_path):  # fmt: skip
    """``cvt watch`` fills exposure 4 CCD by CCD: the window opens it with one CCD (not
    complete), refreshes it as its CCD is written, and shows both, complete, once the second
    is in, where the view was."""
    from core.watch import Watcher

    rawdir, repo = tmp_path / "raw", tmp_path / "repo"
    rawdir.mkdir()
    repo.mkdir()
    publish_copy(Path(sim_exposure[0]), repo, FIRST)
    watcher = Watcher(rawdir, repo, expect=2, timeout=120, settle=10, poll=0.1, workers=1)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        w = viewer()
        w.follower.interval = 0.2
        w.follow(repo)
        qtbot.waitUntil(lambda: w.exposure is not None and w.exposure.obsid == FIRST, timeout=20000)
        first, second = raws[FOURTH]
        shutil.copyfile(first, rawdir / first.name)
        qtbot.waitUntil(
            lambda: w.exposure is not None and w.exposure.obsid == FOURTH, timeout=60000
        )
        assert w.exposure.attrs["complete"] is False  # visible from its first CCD on
        assert not w.follower.current_complete
        # the store is named before its first CCD is written: refreshed as that one comes in
        qtbot.waitUntil(lambda: len(w.exposure.detector_names) == 1, timeout=60000)
        assert w.exposure.obsid == FOURTH and w.exposure.attrs["complete"] is False
        assert w.goto(w.exposure.detector_names[0])
        qtbot.waitUntil(lambda: not w.view.flying, timeout=5000)
        where = w.view.view_rect()
        shutil.copyfile(second, rawdir / second.name)
        qtbot.waitUntil(
            lambda: w.exposure.obsid == FOURTH and w.exposure.attrs.get("complete") is True,
            timeout=60000,
        )
        assert sorted(w.exposure.detector_names) == ["R22_S11", "R22_S12"]
        assert w.view.view_rect() == pytest.approx(where, rel=1e-6)  # a refresh keeps the view
        assert w.follower.current_complete
        assert open_exposure(repo / f"{FOURTH}.zarr").attrs["complete"] is True
    finally:
        stop.set()
        thread.join(60)


def test_follow_through_cvt_serve_switches_pauses_and_resumes(viewer, qtbot, sim_exposure, raws,
                                                              tmp_path):  # fmt: skip
    from tests.cvt.test_serve import Served

    repo = tmp_path / "repo"
    repo.mkdir()
    publish_copy(Path(sim_exposure[0]), repo, FIRST)
    served = Served(repo, tmp_path / "serve.log")
    try:
        w = viewer()
        w.follower.interval = 0.2
        assert w.follow(served.url)
        assert w.follower.remote
        t = follow_and_publish(qtbot, w, repo, raws, via="cvt serve, server-sent events")
        assert t["switch"] < 10
        assert w.url.startswith(served.url.rstrip("/"))
        assert "connected" in w.follow_controls.label.text()
        # the server goes away: the window says so and keeps working; following resumes when
        # a server is back on the same port
        code, _ = served.stop()
        assert code == 0
        qtbot.waitUntil(lambda: "unreachable" in w.follow_controls.label.text(), timeout=20000)
        assert w.follower.failures >= 1
    finally:
        if served.proc.poll() is None:
            served.stop()


def test_cvt_view_follow_shows_the_newest_exposure_of_a_repository(sim_exposure, raws, tmp_path,
                                                                   qapp):  # fmt: skip
    from tests.cvt.test_viewer import _cvt

    repo = tmp_path / "repo"
    repo.mkdir()
    publish_copy(Path(sim_exposure[0]), repo, FIRST)
    ingest_into(repo, raws[SECOND])
    out = tmp_path / "newest.png"
    res = _cvt("view", str(repo), "--follow", "--screenshot", str(out), "--size", "320x240",
               "--timeout", "50")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"following {repo}: {SECOND}" in res.stdout and out.stat().st_size > 0
