"""CCD tasks on a real Dask cluster (two worker processes) make the same exposure as the local
path: pixels, overview, metrics and sources; the batch ingest and the watcher both."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from core.exposure import open_exposure
from core.ingest import ingest
from core.simulate import simulate_exposure
from core.watch import Watcher
from tests.core.test_watch import assert_same_store

distributed = pytest.importorskip("distributed")

DETECTORS = ("R22_S11", "R22_S12")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
    ) as c:
        yield c


def test_dask_cluster_ingests_what_the_local_path_does(cluster, tmp_path):
    sim = simulate_exposure(
        tmp_path / "raw", camera="ComCam", detectors=DETECTORS, seed=11, workers=2
    )
    local, _ = ingest([tmp_path / "raw"], tmp_path / "local", workers=1)
    remote, unreadable = ingest(
        [tmp_path / "raw"], tmp_path / "dask", scheduler=cluster.scheduler_address
    )
    assert unreadable == [] and remote[0].ok and not remote[0].failures
    a, b = open_exposure(local[0].path), open_exposure(remote[0].path)
    assert b.obsid == sim.obsid and b.complete
    assert_same_store(a, b)
    assert len(b.table("metrics")["amp"]) == 16 * len(DETECTORS)
    assert len(b.table("sources")) > 0

    # the watcher on the same cluster
    events = []
    watcher = Watcher(
        tmp_path / "raw",
        tmp_path / "watched",
        expect=len(DETECTORS),
        poll=0.2,
        scheduler=cluster.scheduler_address,
        on_event=events.append,
    )
    stop = threading.Event()
    done = []
    thread = threading.Thread(target=lambda: done.extend(watcher.run(stop, idle_exit=1.0)))
    thread.start()
    thread.join(120)
    stop.set()
    thread.join(10)
    assert [d.obsid for d in done] == [sim.obsid] and watcher.errors == []
    assert_same_store(a, open_exposure(done[0].path))


def test_the_watcher_on_a_cluster_fills_an_object_store(cluster, moto_s3, aws_env, tmp_path):
    """``cvt watch --repo s3://... --scheduler``: the cluster's workers write the CCDs into the
    object store (moto's S3 server), reaching it through the standard AWS variables alone, and
    the exposure is the one the local path makes in a folder; its catalog is in the bucket."""
    import os

    import s3fs

    from core.catalog import query_exposures

    options, env = moto_s3
    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir("cvt-dask")

    def set_env() -> None:  # what a deployment does with the workers' environment
        os.environ.update(env)
        s3fs.S3FileSystem.clear_instance_cache()

    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    try:
        client.run(set_env)
    finally:
        client.close()
    sim = simulate_exposure(
        tmp_path / "raw", camera="ComCam", detectors=DETECTORS, seed=13, faults=False, workers=2
    )
    local, _ = ingest([tmp_path / "raw"], tmp_path / "local", workers=1)
    url = "s3://cvt-dask/repo"
    watcher = Watcher(
        tmp_path / "raw", url, expect=len(DETECTORS), poll=0.2,
        scheduler=cluster.scheduler_address, state=tmp_path / "state",
    )  # fmt: skip
    done = watcher.run(idle_exit=1.0)
    assert [d.obsid for d in done] == [sim.obsid] and watcher.errors == []
    assert done[0].path == f"{url}/{sim.obsid}.zarr"
    x = open_exposure(done[0].path)
    assert x.complete
    assert_same_store(open_exposure(local[0].path), x)
    assert [r["obsid"] for r in query_exposures(url)] == [sim.obsid]


def test_the_watcher_asks_the_cluster_its_size_once_a_round(cluster, tmp_path):
    """A Dask cluster's size is a round trip to the scheduler: the watcher asks it once per
    round of looking and submitting, not once per file it accepts (two land together here)."""
    import time

    from core.distributed import DaskExecutor

    class Counting(DaskExecutor):
        asked = 0

        @property
        def _max_workers(self) -> int:
            Counting.asked += 1
            return super()._max_workers

    sim = simulate_exposure(
        tmp_path / "raw", camera="ComCam", detectors=DETECTORS, seed=12, faults=False, workers=2
    )
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    executor = Counting(client=client)
    watcher = Watcher(tmp_path / "raw", tmp_path / "repo", expect=2, poll=0.1, executor=executor)
    asked = []
    try:
        t0 = time.monotonic()
        while not watcher.done and time.monotonic() - t0 < 120:
            before = Counting.asked
            watcher.step(wait_for=0.1)
            asked.append(Counting.asked - before)
            time.sleep(0.1)
    finally:
        watcher.close()
        client.close()
    assert [d.obsid for d in watcher.done] == [sim.obsid] and watcher.errors == []
    assert max(asked) == 1, asked  # both files accepted and submitted in one round


def test_an_unreachable_scheduler_says_so(tmp_path):
    from core.distributed import DaskExecutor, SchedulerError

    with pytest.raises(SchedulerError, match="cannot reach"):
        DaskExecutor("tcp://127.0.0.1:9", connect_timeout=1.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_ingest_workers_keep_freed_memory_for_the_next_ccd():
    """In a worker, a freed 100 MB array stays in the process for the next CCD's (no fresh
    mapping to fault in page by page); by default it goes back to the kernel at once."""
    code = (
        "import sys, numpy as np\n"
        "from core.distributed import keep_freed_memory\n"
        "if sys.argv[1] == '1': keep_freed_memory()\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "before = rss(); a = np.ones(100 * 2**20 // 8); del a\n"
        "print(rss() - before)\n"
    )
    kept = {}
    for flag in ("0", "1"):
        out = subprocess.run(
            [sys.executable, "-c", code, flag], capture_output=True, text=True, check=True
        )
        kept[flag] = int(out.stdout.split()[-1])
    assert kept["0"] < 20 * 2**20 and kept["1"] > 90 * 2**20, kept


def test_a_local_pool_only_where_it_has_work_for_several_processes():
    """One rule for ``make_executor`` and for ``cvt ingest``'s early start of the pool."""
    import os

    from core.distributed import local_workers, make_executor

    assert local_workers(3, 5) == 3
    assert local_workers(1, 5) == 0 and local_workers(3, 1) == 0
    cores = os.cpu_count() or 1
    assert local_workers(None, 5) == (cores if cores > 1 else 0)
    assert make_executor(None, 1, 5) is None and make_executor(None, 3, 1) is None
