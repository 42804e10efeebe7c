"""Test helper: does a piece of work let other threads run (hand the interpreter lock over)?"""

from __future__ import annotations

import sys
import threading
import time


def beats_while(work, repeat: int = 1) -> int:
    """How often this thread ran (a 1 ms sleep loop, switch interval 0.5 ms) while another thread
    did ``work`` ``repeat`` times: a count, not a time, so machine noise does not decide it."""
    done, beats = threading.Event(), [0]

    def run() -> None:
        for _ in range(repeat):
            work()
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        t = threading.Thread(target=run)
        t.start()
        while not done.is_set():
            time.sleep(0.001)
            beats[0] += 1
        t.join()
    finally:
        sys.setswitchinterval(old)
    return beats[0]
