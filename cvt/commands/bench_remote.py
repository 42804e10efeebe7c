"""``cvt bench remote``: what a viewer waits for over HTTP, through ``cvt serve`` with latency.

For each latency (added by the server to every response, as a long link would):

- first frame: open the exposure and read the coarsest overview level, what the viewer's first
  whole-focal-plane picture needs (target: 2 s at 30 ms);
- zoomed viewport: a 1600 x 1000 screen at level 0 of the central CCD, one read per 512 x 512
  tile from a pool of threads as the viewer reads (target: 0.5 s at 30 ms);

with the requests and bytes the server saw. The disk chunk cache is off for these (every read
goes to the server), then one viewport with a warm disk cache shows what a revisit costs.

The default exposure is a full LSSTCam focal plane built from one simulated, ingested CCD: its
pyramid is hard-linked under every science detector's name and position, and the overview is
binned from them, so the consolidated metadata (one request), the overview and the chunks are
the size of a real exposure's. ``--repo`` benchmarks a repository of your own instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VIEW = (1000, 1600)  # rows, columns of the zoomed screen
TARGET_FIRST_S = 2.0
TARGET_VIEW_S = 0.5


def add_arguments(parser) -> None:
    parser.add_argument(
        "--latency", default="0,30,100", help="milliseconds per request, comma separated"
    )
    parser.add_argument("--repo", help="a repository to serve (default: a simulated full camera)")
    parser.add_argument("--obsid", help="the exposure to read (default: the first)")
    parser.add_argument("--workers", type=int, default=16, help="viewer's tile-reading threads")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (median)")
    parser.add_argument(
        "--workdir", help="where to keep the simulated repository (default: the cvt cache)"
    )


# ---------------------------------------------------------------------------------------------
# The exposure: one simulated CCD, spread over the focal plane


def _full_camera(workdir: Path) -> tuple[Path, str]:
    from core import simulate
    from core.camera import load_camera
    from core.exposure import OverviewGrid, open_exposure, write_overview
    from core.ingest import ingest
    from core.zarrio import Writer

    repo = workdir / "repo"
    done = workdir / "full.json"
    if done.exists():
        return repo, json.loads(done.read_text())["obsid"]
    shutil.rmtree(workdir, ignore_errors=True)
    print("bench remote: simulating and ingesting one CCD (once; kept in", workdir, ")")
    sim = simulate.simulate_exposure(workdir / "raw", detectors=["R22_S11"], seed=11, workers=1)
    reports, _ = ingest(list(sim.files), workdir / "one", workers=1)
    src = reports[0].path
    one = open_exposure(src)
    det = one.detector("R22_S11")
    camera = load_camera(one.attrs["camera"])
    science = [d for d in camera.detectors if d.kind == "science"]
    obsid = one.obsid
    out = repo / f"{obsid}.zarr"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(src, out, copy_function=os.link)
    root = json.loads((out / "zarr.json").read_text())
    nodes = root["consolidated_metadata"]["metadata"]
    prefix = "detectors/R22_S11"
    template = {k: v for k, v in nodes.items() if k == prefix or k.startswith(prefix + "/")}
    grid = OverviewGrid.for_bounds(camera.fp_bounds)
    levels = [det.level(i)[:] for i in range(min(2, det.n_levels))]
    print(f"bench remote: placing it at the {len(science)} science detectors (hard links)")
    for d in science:
        origin = (float(d.fp_bounds[0]), float(d.fp_bounds[1]))
        if d.name != "R22_S11":
            shutil.copytree(src / prefix, out / "detectors" / d.name, copy_function=os.link)
        for key, doc in template.items():
            doc = json.loads(json.dumps(doc))
            cvt = doc.get("attributes", {}).get("cvt")
            if key == prefix and cvt is not None:
                cvt.update(name=d.name, id=d.id, origin=list(origin))
            nodes[f"detectors/{d.name}" + key[len(prefix) :]] = doc
        grid.add(*grid.bin_detector(levels, origin))
    shutil.rmtree(out / "overview")
    writer = Writer(str(out))
    write_overview(writer, grid)
    nodes.update(writer.nodes)
    attrs = root["attributes"]["cvt"]
    attrs["detectors"] = [d.name for d in science]
    attrs["detectors_missing"] = [
        d.name for d in camera.detectors if d.name not in set(attrs["detectors"])
    ]
    root["consolidated_metadata"]["metadata"] = dict(sorted(nodes.items()))
    (out / "zarr.json").write_text(json.dumps(root))
    done.write_text(json.dumps({"obsid": obsid}))
    return repo, obsid


# ---------------------------------------------------------------------------------------------
# The measures


def _viewport_tiles(shape: tuple[int, int], chunk: tuple[int, int]) -> list[tuple[slice, slice]]:
    ny, nx = shape
    h, w = min(VIEW[0], ny), min(VIEW[1], nx)
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    cy, cx = chunk
    return [
        (slice(ty * cy, min((ty + 1) * cy, ny)), slice(tx * cx, min((tx + 1) * cx, nx)))
        for ty in range(y0 // cy, math.ceil((y0 + h) / cy))
        for tx in range(x0 // cx, math.ceil((x0 + w) / cx))
    ]


def _first_frame(url: str) -> tuple[float, object]:
    from core.exposure import open_exposure

    t = time.perf_counter()
    exp = open_exposure(url)
    coarsest = len(exp.overview_attrs["factors"]) - 1
    exp.overview_level(coarsest)[:]
    return time.perf_counter() - t, exp


def _viewport(exp, detector: str, pool: ThreadPoolExecutor) -> float:
    arr = exp.detector(detector).level(0)
    tiles = _viewport_tiles(arr.shape, arr.chunks)
    t = time.perf_counter()
    list(pool.map(lambda s: arr[s], tiles))
    return time.perf_counter() - t


def _central_detector(exp) -> str:
    names = exp.detector_names
    return "R22_S11" if "R22_S11" in names else names[len(names) // 2]


def run(args) -> int:
    from core import remote
    from core.exposure import list_exposures
    from cvt.server import STATS, BackgroundServer, Faults, make_app

    latencies = [float(x) for x in args.latency.split(",") if x.strip()]
    if args.repo:
        repo = Path(args.repo)
        obsid = args.obsid or list_exposures(repo)[0]
    else:
        workdir = (
            Path(args.workdir)
            if args.workdir
            else remote.default_cache_dir().parent / "bench-remote"
        )
        repo, obsid = _full_camera(workdir)
    meta = (repo / f"{obsid}.zarr" / "zarr.json").stat().st_size
    print(
        f"bench remote: {repo / obsid}.zarr, root zarr.json {meta / 1e6:.2f} MB, "
        f"{args.workers} reading threads, median of {args.repeat}"
    )

    rows = []
    old = remote.configure(cache_bytes=0)
    cache_tmp = Path(tempfile.mkdtemp(prefix="cvt-bench-cache-"))
    try:
        with ThreadPoolExecutor(args.workers) as pool:
            for latency in latencies:
                app = make_app(repo, faults=Faults(latency_ms=latency))
                stats = app[STATS]
                with BackgroundServer(app) as url:
                    exposure_url = f"{url}{obsid}.zarr"
                    _first_frame(exposure_url)  # connections up, code paths warm
                    first, view = [], []
                    for _ in range(args.repeat):
                        stats.reset()
                        s, exp = _first_frame(exposure_url)
                        first.append((s, stats.requests, stats.bytes))
                        stats.reset()
                        s = _viewport(exp, _central_detector(exp), pool)
                        view.append((s, stats.requests, stats.bytes))
                    warm = None
                    if latency == max(latencies):
                        remote.configure(cache_bytes=1 << 30, cache_dir=cache_tmp)
                        _, exp = _first_frame(exposure_url)
                        _viewport(exp, _central_detector(exp), pool)  # fills the disk cache
                        _, exp = _first_frame(exposure_url)
                        stats.reset()
                        warm = (_viewport(exp, _central_detector(exp), pool), stats.requests)
                        remote.configure(cache_bytes=0)
                rows.append((latency, _median(first), _median(view), warm))
    finally:
        remote.restore(old)
        shutil.rmtree(cache_tmp, ignore_errors=True)

    print()
    print(
        f"{'latency':>8} | {'first frame':>11} {'req':>4} {'KB':>7} | "
        f"{'viewport':>9} {'req':>4} {'MB':>6} | {'warm cache':>10}"
    )
    print("-" * 78)
    for latency, (fs, freq, fb), (vs, vreq, vb), warm in rows:
        w = f"{warm[0] * 1e3:6.0f} ms" if warm else ""
        print(
            f"{latency:6.0f}ms | {fs * 1e3:8.0f} ms {freq:4d} {fb / 1e3:7.0f} | "
            f"{vs * 1e3:6.0f} ms {vreq:4d} {vb / 1e6:6.2f} | {w:>10}"
        )
    at30 = [r for r in rows if r[0] == 30]
    if at30:
        _, (fs, _, _), (vs, _, _), _ = at30[0]
        print(
            f"\ntargets at 30 ms: first frame {fs:.2f} s (<= {TARGET_FIRST_S} s: "
            f"{'ok' if fs <= TARGET_FIRST_S else 'MISSED'}), viewport {vs:.2f} s "
            f"(<= {TARGET_VIEW_S} s: {'ok' if vs <= TARGET_VIEW_S else 'MISSED'})"
        )
    return 0


def _median(samples: list[tuple[float, int, int]]) -> tuple[float, int, int]:
    s = statistics.median(x[0] for x in samples)
    return s, samples[-1][1], samples[-1][2]
