"""Imported once by the ingest's forkserver (``core.distributed.make_executor``) before it forks
any worker, so each worker starts with the ingest's modules imported and numba's CPU target
ready, instead of doing both itself on its first CCD, and this runs while the submitting
process still reads the raw headers.

- The import is ~1 s of CPU a worker.
- numba readies its CPU target (its registries, and ``numba.np.arraymath``, which imports
  ``scipy.linalg`` to look for BLAS) the first time a process loads any cached kernel: 0.45 to
  0.9 s, which every worker paid inside its first CCD's overscan (0.55 to 0.69 s instead of
  0.02). Done here, the workers inherit it.
- The cameras' geometry (``core.camera.load_camera``, cached per process): 0.15 s for LSSTCam's,
  which every worker paid inside its first read.
- Loading every kernel numba has cached, too, took 0.9 s more for 96 signatures, of which a CCD
  uses 22: slower than each worker loading its own on its first CCD.

Nothing here may raise: the forkserver would die with it (it forgives only ImportError).
"""

from __future__ import annotations

import contextlib
import signal

# Ctrl-C is for the ingest to handle (core.ingest), not for its pool: the forkserver ignores it
# only once this preload is done, and its workers take their handlers from it
signal.signal(signal.SIGINT, signal.SIG_IGN)

with contextlib.suppress(Exception):  # a worker then imports as it always could
    from core import ingest  # noqa: F401  (the import is the point)

with contextlib.suppress(Exception):  # a worker then readies it on its first kernel
    from numba.core.registry import cpu_target

    cpu_target.target_context.refresh()

with contextlib.suppress(Exception):
    from core.camera import CAMERAS, load_camera

    for name in CAMERAS:
        load_camera(name)
