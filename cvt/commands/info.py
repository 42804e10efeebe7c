"""``cvt info FILE...``: what a camera engineer wants to know about raw files, without a window.

Reads each file completely (so a truncated or corrupt file is caught, not only a bad header).
Bad files get one ``path: reason`` line on stderr; the others are still reported; the exit
status is 1 if any file was bad. Never imports Qt.
"""

from __future__ import annotations

import argparse
import sys

from core.layout import SEGMENTS_8, SEGMENTS_16
from core.rawfile import GuiderStampFileError, RawCCD, RawFileError, read_raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="raw FITS files or URLs")


def _value(value: object, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def describe(raw: RawCCD) -> str:
    """The compact block ``cvt info`` prints for one raw CCD file."""
    info = raw.info
    layout = raw.layout
    ny, nx = layout.raw_shape
    dy, dx = layout.data_shape
    names = SEGMENTS_16 if info.n_segments == 16 else SEGMENTS_8
    order = f"{names[0]}..{names[7]}" + (f", {names[8]}..{names[15]}" if len(names) == 16 else "")
    compression = {
        "none": "none",
        "gzip": "whole-file gzip",
        "rice": "RICE_1 tiles" + (" inside whole-file gzip" if info.gzipped else ""),
    }[info.compression]
    lines = [
        raw.path,
        f"  instrument   {info.instrument} (camera {info.camera})",
        f"  obsid        {info.obsid} (day_obs {_value(info.dayobs)}, seq {_value(info.seqnum)})",
        f"  detector     {info.detector} (id {info.detector_id}), vendor {info.vendor}",
        f"  image        {_value(info.image_type)}, exposure {_value(info.exposure_time, ' s')}"
        f", filter {_value(info.filter)}",
        f"  segments     {info.n_segments} ({order}), raw {nx} x {ny} {raw.segments.dtype}, "
        f"DATASEC {layout.datasec_fits}",
        f"  layout       data {dx} x {dy}, prescan {layout.prescan_columns} cols, serial "
        f"overscan {layout.serial_overscan_columns} cols, parallel overscan "
        f"{layout.parallel_overscan_rows} rows",
        f"  compression  {compression}",
    ]
    lines += [f"  note         {note}" for note in info.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        try:
            raw = read_raw(path)
        except GuiderStampFileError as exc:
            print(f"{exc.path}: guider stamp file with {exc.n_stamps} stamps (not a CCD raw)")
            continue
        except RawFileError as exc:
            print(str(exc), file=sys.stderr)
            bad += 1
            continue
        print(describe(raw))
    return 1 if bad else 0
