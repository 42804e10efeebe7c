"""Runtime hook of the frozen cvt: runs before the program, in every process of it (the ingest's
worker processes too).

Numba caches compiled kernels (``cache=True`` in core/_jit.py) beside the sources, which a frozen
app does not have, and the bundle may be read-only (an install under /opt). So the cache goes to a
per-user folder: ``$NUMBA_CACHE_DIR`` if set, else the user's cache folder
(``~/.cache/cvt/numba``), else a private temporary folder; and ``cvt_numba_locator`` keys it
so that it does not depend on the directory cvt was started from. Without a writable cache numba
refuses to compile (``cannot cache function ...: no locator available``).
"""


def _cvt_numba_cache() -> None:
    import os
    import sys
    import tempfile
    from pathlib import Path

    os.environ.setdefault(
        "NUMBA_CACHE_LOCATOR_CLASSES",
        "cvt_numba_locator.FrozenBundleLocator,UserProvidedCacheLocator,InTreeCacheLocator,"
        "UserWideCacheLocator,IPythonCacheLocator,ZipCacheLocator",
    )
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    user = os.environ.get("USER") or os.environ.get("USERNAME") or "user"
    for folder in (base / "cvt" / "numba", Path(tempfile.gettempdir()) / f"cvt-numba-{user}"):
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            mine = not hasattr(os, "getuid") or folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and os.access(folder, os.W_OK | os.X_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(folder)
            return


_cvt_numba_cache()
del _cvt_numba_cache
