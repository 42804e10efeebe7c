"""Imported once by the ingest's forkserver (``core.distributed.make_executor``) before it forks
any worker, so each worker starts with the ingest's modules imported instead of importing them
itself (~1 s of CPU a worker), and the import runs while the submitting process still reads
the raw headers. (Loading every kernel numba has cached, too, took 0.9 s more for 96
signatures, of which a CCD uses 22: slower than each worker loading its own on its first CCD.)

Nothing here may raise: the forkserver would die with it (it forgives only ImportError).
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(Exception):  # a worker then imports as it always could
    from core import ingest  # noqa: F401  (the import is the point)
