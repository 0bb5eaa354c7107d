"""The time source of network engines, injectable so that tests drive keep-alive and idle timing.

``SYSTEM_CLOCK`` is ``time.monotonic`` and asyncio's own sleep and timeout. A test clock implements the
same three calls on a time that only moves when the test says so (``tests/support/elevenlabs_server.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (any thread)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (on the running loop)."""

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        """``aw``'s result, or ``TimeoutError`` (``aw`` cancelled) after ``timeout`` of this clock's time."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        return await asyncio.wait_for(aw, timeout)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
