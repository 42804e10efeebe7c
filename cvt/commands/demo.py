"""``cvt demo``: a simulated LSSTCam exposure with stars and injected faults, ingested and shown.

The exposure is made once and cached (``~/.cache/cvt/demo`` or ``--dir``); the raw files are
deleted after the ingest unless ``--keep-raw``, since the store holds everything they held.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from core.exposure import list_exposures, open_exposure
from core.ingest import ingest
from core.paths import user_cache_dir
from cvt.progress import Progress


def default_dir() -> Path:
    return user_cache_dir("demo")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"cache folder (default {default_dir()})"
    )
    parser.add_argument(
        "--detectors",
        nargs="*",
        default=None,
        help="simulate only these detectors (default: all 205)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-view", action="store_true", help="stop after the ingest")
    parser.add_argument("--keep-raw", action="store_true", help="keep the simulated raw files")
    parser.add_argument("--fresh", action="store_true", help="make the exposure again")
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        help="write a picture of the viewer instead of opening a window",
    )


def prepare(
    folder: Path,
    detectors=None,
    seed: int = 2026,
    keep_raw: bool = False,
    fresh: bool = False,
    echo=print,
) -> Path:
    """The demo exposure's store, made on first use."""
    from core.simulate import simulate_exposure

    repo = folder / "repo"
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    existing = list_exposures(repo) if repo.exists() else []
    if existing:
        echo(f"using the cached demo exposure in {repo}")
        return repo / f"{existing[-1]}.zarr"
    raw = folder / "raw"
    n = len(detectors) if detectors else 205
    echo(
        f"simulating an LSSTCam science exposure: {n} CCDs with stars, cosmic rays and injected "
        f"faults (seed {seed}) into {raw} ..."
    )
    t = time.perf_counter()
    sim = simulate_exposure(
        raw, camera="LSSTCam", detectors=detectors, seed=seed, image_type="science"
    )
    echo(f"  {len(sim.files)} raw files in {time.perf_counter() - t:.1f} s")
    echo("ingesting (ISR, assembly, pyramids, metrics, sources) ...")
    reports, _ = ingest([raw], repo, progress=Progress())
    (report,) = reports
    echo(f"  {len(report.detectors)} CCDs in {report.seconds:.1f} s -> {report.path}")
    truth = next(raw.glob("*_truth.json"), None)
    if truth is not None:
        shutil.copy(truth, folder / truth.name)
    if not keep_raw:
        shutil.rmtree(raw, ignore_errors=True)
    return report.path


def describe(path: Path, echo=print) -> None:
    exp = open_exposure(path)
    a = exp.attrs
    echo(
        f"\n{a['obsid']}: {a['camera']} {a['image_type']} {a['exposure_time']} s, "
        f"{len(exp.detector_names)} detectors, written by cvt {a['software_version']}"
    )
    echo(f"  store: {path}")
    metrics = exp.table("metrics")
    if metrics:
        echo(
            f"  per-amp metrics: {len(next(iter(metrics.values())))} amps x {len(metrics)} columns"
        )
    sources = exp.table("sources")
    if sources:
        echo(f"  sources detected: {len(next(iter(sources.values())))}")
    truth = next(path.parent.parent.glob("*_truth.json"), None)
    if truth is not None:
        import json

        faults = json.loads(truth.read_text()).get("faults", [])
        echo(f"  injected faults ({len(faults)}), to find with the health check:")
        for f in faults:
            echo(f"    {f['detector']}_{f['amp']}: {f['kind']}")


def run(args) -> int:
    folder = args.dir or default_dir()
    path = prepare(folder, args.detectors, args.seed, args.keep_raw, args.fresh)
    describe(path)
    if args.no_view:
        return 0
    from cvt.commands import view

    parser = argparse.ArgumentParser(prog="cvt view")
    view.add_arguments(parser)
    argv = [str(path)] + (["--screenshot", str(args.screenshot)] if args.screenshot else [])
    return view.run(parser.parse_args(argv))
