"""Time as an input.

Sans-IO cores never read a clock: adapters pass `now_ms` in. This module is the one place that
reads the monotonic clock, and offers a `ManualClock` for tests and simulations.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time in integer milliseconds (monotonic)."""

    def now_ms(self) -> int: ...


class MonotonicClock:
    """The process's monotonic clock, in milliseconds."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to; for tests and deterministic simulation."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, delta_ms: int) -> int:
        if delta_ms < 0:
            raise ValueError("a clock never goes backwards")
        self._now_ms += delta_ms
        return self._now_ms

    def set(self, now_ms: int) -> None:
        if now_ms < self._now_ms:
            raise ValueError("a clock never goes backwards")
        self._now_ms = now_ms


def wall_clock_unix_ms() -> int:
    """Wall-clock time in Unix milliseconds, for timestamps that cross machines (announcements)."""
    return time.time_ns() // 1_000_000


__all__ = ["Clock", "MonotonicClock", "ManualClock", "wall_clock_unix_ms"]
