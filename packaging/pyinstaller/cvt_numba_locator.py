"""Where the frozen cvt keeps numba's compiled kernels (named by rthook_cvt.py in the environment
variable ``NUMBA_CACHE_LOCATOR_CLASSES``, ahead of numba's own locators).

PyInstaller gives a bundled module a relative ``co_filename`` (``core/_isr_kernels.py``). Numba's
locators resolve that against the current directory: either no source file is found (no
``NUMBA_CACHE_DIR``, no in-tree cache), or the user-wide cache folder is named after
``<cwd>/core``, so each new directory that cvt starts from compiles every kernel again (tens of
seconds). This locator names the folder after the relative path only, under ``NUMBA_CACHE_DIR``.
The source stamp stays numba's frozen one, a hash of the executable (which holds the bytecode), so
a new build never loads an old build's kernels. Anything else goes to numba's usual locators.
"""

from __future__ import annotations

import hashlib
import os
import sys

from numba.core import config
from numba.core.caching import _CacheLocator, _SourceFileBackedLocatorMixin


class FrozenBundleLocator(_SourceFileBackedLocatorMixin, _CacheLocator):
    """Kernels of modules bundled in the frozen executable, in ``$NUMBA_CACHE_DIR/frozen``."""

    def __init__(self, py_func, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        package = os.path.dirname(py_file).replace(os.sep, "/")
        digest = hashlib.sha1(package.encode()).hexdigest()[:16]
        name = package.rsplit("/", 1)[-1] or "main"
        self._cache_path = os.path.join(config.CACHE_DIR, "frozen", f"{name}_{digest}")

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file: str):
        if not (getattr(sys, "frozen", False) and config.CACHE_DIR) or os.path.isabs(py_file):
            return None
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self
