"""``cvt bench NAME``: the benchmarks (never part of the tests): ingest, detect, view, remote,
watch, store."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "ingest": ("bench_ingest", "ingest per CCD against an astropy+numpy baseline; full exposures"),
    "detect": ("bench_detect", "source detection against SEP on simulated fields with known truth"),
    "view": ("bench_view", "viewer: time to first frame, GUI stalls, tiles/s, memory"),
    "watch": (
        "bench_watch",
        "cvt watch on a simulated night dripped at the camera's pace: latency",
    ),
    "remote": ("bench_remote", "over HTTP with latency: first frame, zoomed viewport, requests"),
    "store": ("bench_store", "the store's codecs and chunk sizes: speed and size, local and HTTP"),
}


def add_arguments(parser) -> None:
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options")


def run(args) -> int:
    module_name, help_text = BENCHMARKS[args.name]
    module = importlib.import_module(f"cvt.commands.{module_name}")
    sub = argparse.ArgumentParser(prog=f"cvt bench {args.name}", description=help_text)
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(args.args)) or 0)
