"""The viewer tests' one Qt fixture, and the small simulated exposure they look at.

``viewer`` makes real windows (offscreen), closes them after the test, and fails the test if a
top-level widget outlives it or a ``cvt-*`` worker thread is still running (napari's rule: a
leak is a bug, not noise).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SIM_DETECTORS = ("R22_S11", "R22_S12")


def _cvt_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cvt-") and t.is_alive()]


@pytest.fixture
def viewer(qapp, qtbot):
    """``viewer(**kw)`` -> a shown ``ViewerWindow`` (no fly animation unless asked)."""
    import shiboken6
    from PySide6.QtCore import QEvent, QThreadPool
    from PySide6.QtWidgets import QApplication

    from cvt.viewer.window import ViewerWindow

    before = set(QApplication.topLevelWidgets())
    threads_before = set(_cvt_threads())
    made: list[ViewerWindow] = []

    def make(size=(900, 700), **kw) -> ViewerWindow:
        kw.setdefault("animate", False)
        w = ViewerWindow(**kw)
        for dock in (w.hist_dock, w.header_dock):
            dock.hide()
        w.resize(*size)
        w.show()
        made.append(w)
        return w

    yield make

    for w in made:
        w.close()  # stops and joins the window's workers
        shiboken6.delete(w)  # now, with its children (menus, docks): not at some later loop
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QApplication.processEvents()
    leaked = [w for w in QApplication.topLevelWidgets() if w not in before]
    names = [f"{type(w).__name__}({w.objectName() or w.windowTitle()!r})" for w in leaked]
    deadline = time.monotonic() + 2.0
    while _cvt_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    running = [t.name for t in _cvt_threads() if t not in threads_before]
    for w in leaked:  # do not let one test's leak fail the next ones too
        w.close()
        shiboken6.delete(w)
    assert not names, f"top-level widgets leaked by the test: {names}"
    assert not running, f"worker threads still running after the test: {running}"
    assert QThreadPool.globalInstance().activeThreadCount() == 0


def wait_settled(qtbot, w, timeout=20000) -> None:
    """Until every tile the view needs is drawn with the current stretch."""
    qtbot.waitUntil(w.is_settled, timeout=timeout)
    qtbot.wait(10)


def open_and_settle(qtbot, w, path, timeout=20000) -> None:
    with qtbot.waitSignal(w.opened, timeout=timeout):
        w.open(path)
    wait_settled(qtbot, w, timeout)


def _ingested_simulation(tmp_path_factory, name: str, dead_amp: str):
    """The two simulated E2V CCDs (seed 7) with R22_S11's ``dead_amp`` dead, a hot column in
    R22_S11_C14 and a noisy R22_S12_C05, ingested: (store path, truth dict)."""
    simulate = pytest.importorskip("core.simulate")
    from core.ingest import ingest

    root = tmp_path_factory.mktemp(name)
    raw, repo = root / "raw", root / "repo"
    faults = [
        simulate.Fault("R22_S11", dead_amp, "dead_amp"),
        simulate.Fault("R22_S11", "C14", "hot_column"),
        simulate.Fault("R22_S12", "C05", "noisy_amp", {"factor": 5.0}),
    ]
    sim = simulate.simulate_exposure(
        raw, detectors=list(SIM_DETECTORS), seed=7, image_type="science", faults=faults, workers=1
    )
    reports, bad = ingest([raw], repo, workers=1)
    assert not bad and reports and reports[0].ok, (bad, reports)
    truth = json.loads(Path(sim.truth_path).read_text())
    return reports[0].path, truth


@pytest.fixture(scope="session")
def sim_exposure(tmp_path_factory):
    """Two simulated E2V CCDs with a dead amp, a hot column and a noisy amp, ingested:
    (store path, truth dict). About 10 s, once per session."""
    return _ingested_simulation(tmp_path_factory, "viewer-sim", dead_amp="C03")


@pytest.fixture(scope="session")
def sim_exposure_b(tmp_path_factory):
    """The exposure of ``sim_exposure`` again (same seed, same pixels amp by amp), except that
    the dead amp is R22_S11_C12 instead of R22_S11_C03: (store path, truth dict)."""
    return _ingested_simulation(tmp_path_factory, "viewer-sim-b", dead_amp="C12")


@pytest.fixture(scope="session")
def sim_failed(tmp_path_factory):
    """An exposure of two simulated CCDs (seq 2) whose R22_S12 file is cut short after its
    headers: R22_S11 ingested, R22_S12 a failure with its reason, 204 detectors missing."""
    simulate = pytest.importorskip("core.simulate")
    from core.ingest import ingest

    root = tmp_path_factory.mktemp("viewer-failed")
    sim = simulate.simulate_exposure(
        root / "raw", detectors=list(SIM_DETECTORS), seed=11, seq=2, faults=False, workers=1
    )
    bad = next(f for f in sim.files if "R22_S12" in Path(f).name)
    data = Path(bad).read_bytes()
    Path(bad).write_bytes(data[: len(data) // 3])
    reports, unreadable = ingest([root / "raw"], root / "repo", workers=1)
    assert not unreadable and reports[0].ok and len(reports[0].failures) == 1, reports
    return reports[0].path


def damaged_copy(
    path, dest: Path, *, detector=None, overview=False, metrics=False, truncated=(), undecodable=()
) -> Path:
    """A copy of an exposure store with parts made unreadable: a ``detector``'s metadata (its
    ``zarr.json`` garbled, and its copy in the root's consolidated metadata, which is what
    readers parse, stripped of its attributes), the ``overview``'s metadata the same way, a
    chunk of the ``metrics`` table overwritten with garbage, chunks (paths in the store)
    ``truncated`` to half their length, and ``undecodable`` ones (a whole blosc header, the
    rest zeroed)."""
    store = dest / Path(path).name
    shutil.copytree(path, store)
    nodes = ([f"detectors/{detector}"] if detector else []) + (["overview"] if overview else [])
    root = json.loads((store / "zarr.json").read_text())
    for node in nodes:
        (store / node / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_ty')
        root["consolidated_metadata"]["metadata"][node]["attributes"] = {}
    (store / "zarr.json").write_text(json.dumps(root))
    if metrics:
        (store / "metrics" / "read_noise_e" / "c" / "0").write_bytes(b"not a blosc frame" * 8)
    for chunk in truncated:
        data = (store / chunk).read_bytes()
        (store / chunk).write_bytes(data[: len(data) // 2])
    for chunk in undecodable:
        data = (store / chunk).read_bytes()
        (store / chunk).write_bytes(data[:16] + bytes(len(data) - 16))
    return store
