"""Where things are: a repository or exposure is a local folder or an fsspec URL; the user's
cache folder. The one place that tells them apart, so every module agrees."""

from __future__ import annotations

import os
from pathlib import Path


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (an object store, a server); False for a
    local path or a ``file://`` URL."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """The folder a local path or ``file://`` URL names."""
    return Path(os.fspath(path).removeprefix("file://"))


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/cvt/...`` (default ``~/.cache/cvt/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "cvt", *parts)
