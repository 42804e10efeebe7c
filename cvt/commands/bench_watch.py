"""``cvt bench watch``: ``cvt watch`` on a simulated night dripped into a folder at the camera's
pace; the latency from each exposure's last file landing to the exposure being complete.

One exposure of the chosen detectors is simulated once (not timed); each exposure of the night is
that exposure's files with the primary header made into a new exposure (OBSID, SEQNUM and the
times), written beside the folder (staged, not timed) and renamed in, all of an exposure's files
spread over ``--readout`` seconds, one exposure every ``--spacing`` seconds.

An exposure is staged just before it lands, once the one before it is complete, when the
machine's memory cannot hold two exposures' raws as well as the work (a full camera is 15 GB, this
VM has 24 GB): the files of an exposure then land as the camera's do, in memory, and the night is
paced by the staging rather than by ``--spacing`` (it says so). Writing the copies during the
night made the landing itself the load (34 s for a full camera instead of the camera's 2 s, on
the cores the ingest needed), and staging a whole night ahead left the first exposures' files
on a disk that reads 0.37 GB/s (latency 45-48 s, for the disk's sake, not the ingest's). The
camera's writers are not the ingest machine's work: at the summit the raws land from the network.

The watcher runs in this process (tasks on the local process pool, or ``--scheduler``). Raw files
and stores of completed exposures are deleted as the night goes (``--keep`` keeps the stores).
Target (ARCHITECTURE.md): a full LSSTCam exposure complete within 30 s of its last file on a
2-core machine.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from astropy.io import fits

from core.ingest import drop_from_page_cache
from core.rawfile import BLOCK
from core.simulate import default_detectors, simulate_exposure
from core.watch import Watcher, WatchEvent, latency_summary


def add_arguments(parser) -> None:
    parser.add_argument("--camera", default="ComCam", help="LSSTCam, ComCam or LATISS")
    parser.add_argument(
        "--detectors",
        type=int,
        default=None,
        help="the first N detectors of the camera (default: all of them)",
    )
    parser.add_argument("--exposures", type=int, default=10, help="exposures in the night")
    parser.add_argument(
        "--spacing", type=float, default=20.0, help="seconds from one exposure to the next"
    )
    parser.add_argument(
        "--readout",
        type=float,
        default=2.0,
        help="seconds over which an exposure's files land (the camera's: ~2)",
    )
    parser.add_argument("--image-type", default="science", help="bias, dark, flat, science")
    parser.add_argument("--compress", choices=("rice",), default=None, help="RICE_1 raw files")
    parser.add_argument("--workers", type=int, default=None, help="local processes for ingest")
    parser.add_argument("--scheduler", help="a Dask scheduler address instead of local processes")
    parser.add_argument("--workdir", help="where the files go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores of the night")


_TIME_KEYS = ("DATE-OBS", "DATE-BEG", "DATE-END", "DATE")
_MJD_KEYS = ("MJD-OBS", "MJD-BEG", "MJD-END", "MJD")


def _header_end(data: bytes) -> int:
    """Bytes of the primary header (a whole number of FITS blocks)."""
    for start in range(0, len(data), BLOCK):
        block = data[start : start + BLOCK]
        if any(block[i : i + 8] == b"END     " for i in range(0, BLOCK, 80)):
            return start + BLOCK
    raise ValueError("no END card in the primary header")


class Template:
    """One simulated raw file, re-issued as any exposure of the night: a new primary header
    (same length) in front of the same segments."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(64 * BLOCK)
        self.n_header = _header_end(head)
        self.header = fits.Header.fromstring(head[: self.n_header].decode("ascii"))

    def header_for(self, seq: int, shift: float) -> bytes:
        h = self.header.copy()
        old_seq = int(h["SEQNUM"])
        h["SEQNUM"] = seq
        h["OBSID"] = re.sub(r"_\d{6}$", f"_{seq:06d}", str(h["OBSID"]))
        for key in _TIME_KEYS:
            if key in h:
                t = datetime.fromisoformat(str(h[key])) + timedelta(seconds=shift)
                h[key] = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
        for key in _MJD_KEYS:
            if key in h:
                h[key] = float(h[key]) + shift / 86400.0
        if "GROUPID" in h:
            h["GROUPID"] = str(h["GROUPID"]) + f"+{seq - old_seq}"
        text = h.tostring().encode("ascii")
        if len(text) != self.n_header:
            raise ValueError(f"{self.path}: the new header changed length")
        return text

    def stage(self, folder: Path, seq: int, shift: float) -> Path:
        """Write the file of exposure ``seq`` into ``folder`` (the staging area, on the same
        filesystem as the watched folder); the template's own exposure is hard-linked."""
        path = folder / re.sub(r"_\d{6}_", f"_{seq:06d}_", self.path.name, count=1)
        if seq == int(self.header["SEQNUM"]):
            os.link(self.path, path)
            return path
        with open(self.path, "rb") as src, open(path, "wb") as out:
            out.write(self.header_for(seq, shift))
            src.seek(self.n_header)
            shutil.copyfileobj(src, out, 16 << 20)
        # the copy, not the template, is what must be in memory when it lands (the two do not
        # fit together: the second exposure's raws partly came from the disk)
        drop_from_page_cache(str(self.path))
        return path


def land(staged: Path, folder: Path) -> Path:
    """A staged file lands in ``folder`` now: its mtime (the watcher's landing time) set, then
    renamed in whole."""
    os.utime(staged)
    dest = folder / staged.name
    os.replace(staged, dest)
    return dest


def _drop_from_memory(folder: Path) -> None:
    """Let the kernel drop the (written back) pages of every file under ``folder``: on a machine
    that holds one exposure's raws at most, the last exposures' stores otherwise keep part of the
    next raws out of memory (the second exposure of a night took 33-42 s instead of 29-30)."""
    for root, _, names in os.walk(folder):
        for name in names:
            drop_from_page_cache(os.path.join(root, name))


def _memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def run(args) -> int:
    from core.camera import load_camera

    camera = load_camera(args.camera)
    names = default_detectors(camera.name)
    if args.detectors:
        names = names[: args.detectors]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cvt-bench-watch-"))
    work.mkdir(parents=True, exist_ok=True)
    templates_dir, raw, repo = work / "templates", work / "raw", work / "repo"
    for d in (raw, repo):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    full = len(names) == len(camera.detectors)
    print(
        f"bench watch: {camera.name}, {len(names)} detectors x {args.exposures} exposures, "
        f"one every {args.spacing:g} s, files over {args.readout:g} s; {os.cpu_count()} cores"
    )
    t0 = time.perf_counter()
    sim = simulate_exposure(
        templates_dir, camera.name, names, seed=1, image_type=args.image_type, seq=1,
        compress=args.compress, faults=True,
    )  # fmt: skip
    templates = [Template(p) for p in sim.files]
    size = sum(p.stat().st_size for p in sim.files)
    print(
        f"simulated the template exposure in {time.perf_counter() - t0:.0f} s ({size / 1e9:.2f} GB)"
    )
    # one exposure's raws in memory at a time when two do not fit beside the work (8 GB)
    one_at_a_time = 2 * size + 8e9 > _memory_bytes()
    if one_at_a_time:
        print(
            f"staging one exposure at a time ({2 * size / 1e9:.0f} GB of raws for two exposures "
            f"and {_memory_bytes() / 1e9:.0f} GB of memory): the night is paced by the staging"
        )

    def stage(k: int) -> list[Path]:
        if one_at_a_time and k:  # the stores written so far make room for the raws
            os.sync()
            _drop_from_memory(repo)
        folder = work / "staged" / str(1 + k)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = [t.stage(folder, 1 + k, shift=k * args.spacing) for t in templates]
        os.sync()  # the staging's writeback is not the night's
        return files

    done_q: queue.Queue = queue.Queue()
    events: list[WatchEvent] = []
    t_complete: list[float] = []

    def on_event(e: WatchEvent) -> None:
        events.append(e)
        if e.kind == "complete":
            t_complete.append(time.time())
            done_q.put(e)
            i = e.info
            print(
                f"  {e.obsid}: {i['ccds']} CCDs complete {i['latency_s']:6.1f} s after its last "
                f"file{' (timed out)' if i['timed_out'] else ''}",
                flush=True,
            )
        elif e.kind in ("failed", "unidentified", "error"):
            print(f"  {e.kind}: {e.reason}", flush=True)

    watcher = Watcher(
        raw, repo, expect=None if full else len(names), timeout=max(60.0, 3 * args.spacing),
        poll=0.25, workers=args.workers, scheduler=args.scheduler, on_event=on_event,
    )  # fmt: skip
    stop = threading.Event()
    cpu: list[float] = []

    def watch() -> None:
        try:
            watcher.run(stop)
        finally:
            cpu.append(time.thread_time())  # the watcher's own work, not the tasks'

    thread = threading.Thread(target=watch, name="cvt-bench-watch")
    thread.start()
    landed: dict[str, list[Path]] = {}
    spreads = []
    completed = 0

    def tidy(block: bool, timeout: float = 0.0) -> None:
        nonlocal completed
        while True:
            try:
                e = done_q.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return
            completed += 1
            for p in landed.pop(e.obsid, []):
                p.unlink(missing_ok=True)
            if not args.keep:
                shutil.rmtree(repo / f"{e.obsid}.zarr", ignore_errors=True)
            block = False

    staged: list[list[Path]] = []
    while not one_at_a_time and len(staged) < args.exposures:
        if staged and shutil.disk_usage(work).free < size + 2e9:
            print(f"the disk holds {len(staged)} exposures staged: the night has no more")
            break
        staged.append(stage(len(staged)))
    t_night = time.time()
    t_staging = 0.0
    try:
        for k in range(args.exposures):
            seq = 1 + k  # the first is the template's own exposure
            if one_at_a_time:
                give_up = time.time() + max(600.0, 10 * args.spacing)
                while landed and time.time() < give_up:  # the exposure before is complete
                    tidy(block=True, timeout=0.5)
                if landed:
                    print(f"  stopping the night: exposure {seq - 1} never completed")
                    break
                t = time.time()
                if shutil.disk_usage(work).free < size + 2e9:
                    print(f"  stopping the night: the disk has no room for exposure {seq}")
                    break
                staged.append(stage(k))
                t_staging += time.time() - t
            if k >= len(staged):
                break
            files = staged[k]
            start = t_night + t_staging + k * args.spacing
            while time.time() < start:
                tidy(block=True, timeout=max(0.01, min(0.5, start - time.time())))
            t_first = time.time()
            paths = []
            for j, f in enumerate(files):
                due = t_first + args.readout * j / max(1, len(files))
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                paths.append(land(f, raw))
            obsid = re.sub(r"_\d{6}$", f"_{seq:06d}", str(templates[0].header["OBSID"]))
            landed[obsid] = paths
            spreads.append(time.time() - t_first)
            tidy(block=False)
        deadline = time.time() + max(600.0, 10 * args.spacing)
        while landed and time.time() < deadline:
            tidy(block=True, timeout=0.5)
    finally:
        stop.set()
        thread.join()
        shutil.rmtree(work / "staged", ignore_errors=True)  # what did not land
    done = watcher.done
    s = latency_summary(done)
    n_ccds = sum(len(d.detectors) for d in done)
    wall = max(max(t_complete, default=time.time()) - t_night - t_staging, 1e-9)
    print(
        f"\nlanding: {statistics.median(spreads):.1f} s per exposure (median; asked "
        f"{args.readout:g} s) for {size / 1e9:.2f} GB"
        + (f"; staging between exposures {t_staging:.0f} s in all" if one_at_a_time else "")
    )
    if s["n"]:
        print(
            f"latency, last file -> complete ({s['n']} exposures): min {s['min']:.1f} s, "
            f"median {s['median']:.1f} s, p95 {s['p95']:.1f} s, max {s['max']:.1f} s"
        )
        print(
            f"throughput: {n_ccds} CCDs in {wall:.0f} s of night (staging apart) = "
            f"{n_ccds / wall:.2f} CCD/s; "
            f"{len(done)}/{len(spreads)} exposures complete, "
            f"{sum(d.timed_out for d in done)} timed out, errors: {len(watcher.errors)}"
        )
        if cpu:
            print(
                f"watcher thread (look, check, refresh, publish, catalog): {cpu[0]:.1f} s CPU, "
                f"{1000 * cpu[0] / max(n_ccds, 1):.0f} ms per CCD"
            )
        if full and camera.name == "LSSTCam":
            verdict = "met" if s["max"] <= 30.0 else "NOT met"
            print(f"target (full LSSTCam complete <= 30 s after its last file): {verdict}")
    print(f"work folder: {work}" + ("" if args.workdir or args.keep else " (deleted)"))
    if not (args.workdir or args.keep):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if len(done) == len(spreads) and not watcher.errors else 1
