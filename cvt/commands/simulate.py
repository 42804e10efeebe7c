"""``cvt simulate OUTDIR``: write realistic simulated raw exposures (and their truth files).

The files are what the camera writes (see ``core.simulate``), so everything downstream (``cvt
info``, the ingest, the viewer) can be exercised without camera data. Never imports Qt.
"""

from __future__ import annotations

import argparse
import sys
import time

from core.simulate import IMAGE_TYPES, simulate_exposure

_CAMERAS = {"lsstcam": "LSSTCam", "comcam": "ComCam", "latiss": "LATISS"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "outdir", metavar="OUTDIR", help="folder for the raw files (made if absent)"
    )
    parser.add_argument(
        "--camera", type=str.lower, choices=sorted(_CAMERAS), default="lsstcam", help="camera"
    )
    parser.add_argument(
        "--detectors",
        nargs="+",
        metavar="DET",
        help="detectors such as R22_S11 (default: all of the camera's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--exposures", type=int, default=1, metavar="K", help="number of exposures (default 1)"
    )
    parser.add_argument("--seq", type=int, default=1, help="sequence number of the first exposure")
    parser.add_argument("--day-obs", default="20261125", metavar="YYYYMMDD", help="observing day")
    parser.add_argument(
        "--image-type", choices=IMAGE_TYPES, default="science", help="image type (default science)"
    )
    parser.add_argument(
        "--compress", choices=["rice"], default=None, help="RICE_1 tile-compress the segments"
    )
    parser.add_argument("--no-faults", action="store_true", help="no injected defects")
    parser.add_argument(
        "--workers", type=int, default=None, help="threads across CCDs (default: all cores)"
    )


def _progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\r  {done}/{total} CCDs", end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.exposures < 1:
        print("cvt simulate: --exposures must be at least 1", file=sys.stderr)
        return 2
    camera = _CAMERAS[args.camera]
    for k in range(args.exposures):
        t0 = time.perf_counter()
        try:
            exp = simulate_exposure(
                args.outdir,
                camera=camera,
                detectors=args.detectors,
                seed=args.seed,
                image_type=args.image_type,
                seq=args.seq + k,
                day_obs=args.day_obs,
                compress=args.compress,
                faults=not args.no_faults,
                workers=args.workers,
                progress=_progress if sys.stderr.isatty() else None,
            )
        except (KeyError, ValueError) as e:
            print(f"cvt simulate: {e}", file=sys.stderr)
            return 2
        dt = time.perf_counter() - t0
        n = len(exp.files)
        print(
            f"{exp.obsid}: {n} file{'s' if n != 1 else ''} in {dt:.1f} s "
            f"({dt / n:.2f} s per CCD), {len(exp.truth['faults'])} faults, truth {exp.truth_path}"
        )
    return 0
