"""Waiting on a state in tests (never a fixed sleep: machines differ a lot in load)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], object], timeout: float = 60.0, step: float = 0.25) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds have passed; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())
