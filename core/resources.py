"""Where the files the program ships (``resources/``) live, in a checkout or an installed wheel."""

from __future__ import annotations

import sys
import sysconfig
from functools import cache
from pathlib import Path


@cache
def resources_dir() -> Path:
    """The ``resources`` folder: beside the package in a checkout, under ``share/cvt`` when installed."""
    candidates = [
        Path(__file__).resolve().parent.parent / "resources",
        Path(sysconfig.get_path("data")) / "share" / "cvt" / "resources",
        Path(sys.prefix) / "share" / "cvt" / "resources",
    ]
    for path in candidates:
        if (path / "cameras").is_dir():
            return path
    raise FileNotFoundError(
        "cannot find the CVT resources folder; looked in " + ", ".join(map(str, candidates))
    )


def resource(*parts: str) -> Path:
    """Path of one shipped resource file, e.g. ``resource("cameras", "lsstcam.json")``."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"missing resource file {path}")
    return path
