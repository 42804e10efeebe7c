"""A work-around for a reference-counting bug in PySide6's ``SignalInstance.emit``.

PySide6 6.12 returns ``True`` from ``emit()`` without a new reference. Where ``True`` is
immortal (CPython >= 3.12) that is harmless; on CPython 3.11 every emission, ours and
pyqtgraph's (it emits on every paint), takes one reference from ``True`` for good, and after a
few thousand frames the interpreter aborts ("Fatal Python error: bool_dealloc"). ``install``
measures whether this PySide has the bug and, only if so, wraps ``emit`` to give the reference
back. Imported by every viewer module that uses Qt, before any signal is emitted.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal, SignalInstance

_installed = False


class _Probe(QObject):
    ping = Signal()


def _leaks() -> bool:
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.ping.emit()
    return sys.getrefcount(True) < before


def install() -> bool:
    """Wrap ``SignalInstance.emit`` if it leaks references to ``True``; True if it did."""
    global _installed
    if _installed:
        return True
    if not _leaks():
        return False
    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None

    def emit(self, *args):
        result = original(self, *args)
        if result is True or result is False:
            incref(result)  # the reference emit() should have returned
        return result

    emit.__doc__ = original.__doc__
    SignalInstance.emit = emit
    _installed = True
    for _ in range(8):  # what the probe itself took
        incref(True)
    return True


install()
