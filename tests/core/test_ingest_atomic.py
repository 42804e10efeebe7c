"""Write once, all or nothing. ``cvt ingest`` stopped as users stop it (Ctrl-C in a terminal,
``kill``, ``kill -9``), with its pool of worker processes: nothing half-written is left looking
like an exposure, no worker outlives it, and what a killed ingest left behind is removed by the
next one. An exposure published by someone else while an ingest ran is never overwritten."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.exposure import (
    PARTIAL,
    ExposureBuilder,
    ExposureError,
    list_exposures,
    open_exposure,
    remove_abandoned,
)
from core.ingest import ingest
from core.simulate import simulate_exposure

ROOT = str(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def comcam_raw(tmp_path_factory):
    """A whole ComCam exposure: 9 CCDs, enough that the first is written long before the last."""
    raw = tmp_path_factory.mktemp("comcam") / "raw"
    simulate_exposure(raw, camera="ComCam", seed=3, workers=1)
    return raw


def _start_ingest(raw: Path, repo: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "cvt", "ingest", str(raw), "--repo", str(repo), "--workers", "2",
         "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a shell's job is
    )


def _partials(repo: Path) -> list[Path]:
    return sorted(repo.glob(f".*{PARTIAL}*")) if repo.exists() else []


def _wait_for_a_written_ccd(proc: subprocess.Popen, repo: Path) -> None:
    """Until the first CCD's arrays are in the partial folder (the pool is at work)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if any(list((p / "detectors").glob("*/1/zarr.json")) for p in _partials(repo)):
            return
        if proc.poll() is not None:
            pytest.fail(f"the ingest ended before a CCD was written: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail("no CCD written within 180 s")


def _live_processes(pgid: int) -> list[str]:
    """The processes of a group that still run (zombies left to a reaper apart)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(text.split(")", 1)[0] + ")")
    return live


def _group_gone(pgid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while _live_processes(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    ("how", "to_group"),
    [("ctrl-c", True), ("kill", False)],
    ids=["ctrl-c to the job's process group", "SIGTERM to cvt"],
)
def test_a_stopped_ingest_publishes_nothing_and_leaves_nothing(comcam_raw, tmp_path, how, to_group):
    repo = tmp_path / "repo"
    proc = _start_ingest(comcam_raw, repo)
    _wait_for_a_written_ccd(proc, repo)
    sig = signal.SIGINT if how == "ctrl-c" else signal.SIGTERM
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -sig, err  # it dies of the signal once it has cleaned up
    assert "interrupted" in err
    assert "Traceback" not in err, err  # the workers leave Ctrl-C to the ingest
    assert list_exposures(repo) == []
    assert sorted(p.name for p in repo.iterdir()) == [], "a partial exposure was left"
    assert _group_gone(proc.pid), "a worker process outlived the ingest"


def test_what_a_killed_ingest_left_is_removed_by_the_next(comcam_raw, tmp_path):
    repo = tmp_path / "repo"
    proc = _start_ingest(comcam_raw, repo)
    _wait_for_a_written_ccd(proc, repo)
    proc.kill()  # kill -9 (or the OOM killer): no chance to clean up
    proc.communicate(timeout=60)
    assert _group_gone(proc.pid), "the workers did not end with their ingest"
    (left,) = _partials(repo)
    assert list_exposures(repo) == []  # never seen as an exposure

    # a partial folder of a living process (another ingest at work) is not touched
    alive = repo / f".XX_C_20990101_000001{PARTIAL}{socket.gethostname()}-{os.getpid()}-0000abcd"
    alive.mkdir()
    reports, unreadable = ingest([comcam_raw], repo, workers=2)
    assert not left.exists()
    assert alive.exists()
    (report,) = reports
    assert report.ok and not report.failures and len(report.detectors) == 9
    assert open_exposure(report.path).complete
    assert remove_abandoned(repo) == []


@pytest.mark.parametrize("after", [0.0, 0.2, 0.6])
def test_ctrl_c_while_the_pool_starts_is_quiet(comcam_raw, tmp_path, after):
    """Once the ingest has started its pool's processes, while they still import (the first
    second or two): no traceback from them or from a worker being started, the exit code of an
    interrupt, nothing left. (Before that, Python itself is starting: a Ctrl-C there is
    Python's own.)"""
    repo = tmp_path / "repo"
    proc = _start_ingest(comcam_raw, repo)
    deadline = time.monotonic() + 60
    while len(_live_processes(proc.pid)) < 3:  # cvt, the resource tracker, the forkserver
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT, (out, err)
    assert err == "interrupted\n", err
    assert _partials(repo) == []
    assert not repo.exists() or list_exposures(repo) == []
    assert _group_gone(proc.pid)


def test_an_exposure_published_meanwhile_is_never_overwritten(tmp_path):
    """Two writers of one exposure (an ingest and a watcher, or two ingests): the second to
    publish is refused, whatever the first did after the second began; with ``replace`` it
    replaces."""
    repo = tmp_path / "repo"
    slow = ExposureBuilder(repo, "XX_C_20990101_000001")
    fast = ExposureBuilder(repo, "XX_C_20990101_000001")
    first = fast.publish({"obsid": "XX_C_20990101_000001", "writer": "fast"}, fast.writer.nodes)
    with pytest.raises(ExposureError, match="published by someone else"):
        slow.publish({"obsid": "XX_C_20990101_000001", "writer": "slow"}, slow.writer.nodes)
    slow.abandon()
    assert open_exposure(first).attrs["writer"] == "fast"
    again = ExposureBuilder(repo, "XX_C_20990101_000001", replace=True)
    again.publish({"obsid": "XX_C_20990101_000001", "writer": "again"}, again.writer.nodes)
    assert open_exposure(first).attrs["writer"] == "again"
    assert sorted(p.name for p in repo.iterdir()) == ["XX_C_20990101_000001.zarr"]
