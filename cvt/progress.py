"""A small progress line on stderr: redrawn in place on a terminal, a line per step otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self._last = 0.0
        self._label = None

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if label != self._label:
            self._label, self.start = label, now
        if not self.tty and done not in (total,) and now - self._last < 2.0:
            return
        self._last = now
        filled = int(self.width * done / max(total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = now - self.start
        rate = f" {done / elapsed:5.1f}/s" if elapsed > 0.5 else ""
        text = f"{label} [{bar}] {done}/{total} CCDs{rate}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done == total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
