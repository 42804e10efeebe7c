"""A work-around for reference-counting bugs of PySide6 6.12 on CPython 3.11.

Some PySide6 6.12 calls return ``None``, ``True`` or ``False`` without a new reference:
``SignalInstance.emit()`` returns ``True`` (pyqtgraph emits on every paint) and
``QCoreApplication.processEvents()`` returns ``None``, and there may be others. From CPython
3.12 these objects are immortal and nothing happens; on 3.11 every such call takes one
reference for good, and after a few thousand frames the interpreter aborts ("Fatal Python
error: bool_dealloc" or "none_dealloc"), a crash found by the viewer's tests.

``install`` checks whether this interpreter and this PySide have the problem and, only if so,
gives the three singletons a reference count they cannot exhaust (what 3.12 does by design).
Imported by every viewer module that uses Qt, before any signal is emitted.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

RESERVE = 1 << 40  # references: about 10^12 lost references before any harm
_installed = False


class _Probe(QObject):
    ping = Signal()


def leaks() -> bool:
    """Whether emitting a signal loses a reference to ``True`` here."""
    if sys.version_info >= (3, 12):
        return False
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    if lost > 0:
        _add_references(True, lost)
    return lost > 0


def _add_references(obj, n: int) -> None:
    # ob_refcnt is the first field of every object in CPython (non-debug builds, < 3.12)
    ctypes.c_ssize_t.from_address(id(obj)).value += n


def install() -> bool:
    """Make ``None``, ``True`` and ``False`` practically immortal if PySide loses references
    to them; True if that was needed."""
    global _installed
    if _installed:
        return True
    if not leaks():
        return False
    for obj in (None, True, False):
        _add_references(obj, RESERVE)
    _installed = True
    return True


install()
