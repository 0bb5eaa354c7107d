"""The one reconnect/backoff policy: jittered exponential delays, on tenacity.

Every outside connection that comes and goes (LiveKit rooms, the ElevenLabs WebSocket, Kafka
producers) waits the same way between attempts: ``initial_s * multiplier**(attempt-1)``, capped at
``max_s``, times a random factor in ``[1 - jitter, 1 + jitter]`` so that many streams that lost the
same server do not come back in step. Loops that hold their own attempt counter use ``delay()``;
calls that are retried until they succeed use ``retrying()`` / ``async_retrying()`` (tenacity). The
random source and the sleep are injectable, so tests neither sleep nor depend on chance.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity
from tenacity.wait import wait_base


class _JitteredExponential(wait_base):
    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.backoff.delay(retry_state.attempt_number)


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25  # fraction of the delay, either way
    rng: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s) or self.multiplier < 1 or not (0 <= self.jitter < 1):
            raise ValueError(f"bad backoff: {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts failures, from 1)."""
        exponent = min(max(attempt, 1) - 1, 64)  # no float overflow after very long outages
        base = min(self.max_s, self.initial_s * self.multiplier**exponent)
        return base * self.rng(1.0 - self.jitter, 1.0 + self.jitter)

    def wait(self) -> wait_base:
        """This policy as a tenacity wait strategy."""
        return _JitteredExponential(self)

    def retrying(
        self,
        retry_on: tuple[type[BaseException], ...],
        *,
        deadline_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.Retrying:
        """Retry a call that raises one of ``retry_on``, until it succeeds or ``deadline_s`` passes
        (then the last error is raised as itself, not wrapped)."""
        return tenacity.Retrying(**self._kwargs(retry_on, deadline_s, before_sleep), sleep=sleep)

    def async_retrying(
        self,
        retry_on: tuple[type[BaseException], ...],
        *,
        deadline_s: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(**self._kwargs(retry_on, deadline_s, before_sleep), sleep=sleep)

    def _kwargs(
        self,
        retry_on: tuple[type[BaseException], ...],
        deadline_s: float | None,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None,
    ) -> dict[str, Any]:
        return {
            "wait": self.wait(),
            "retry": tenacity.retry_if_exception_type(retry_on),
            "stop": tenacity.stop_after_delay(deadline_s) if deadline_s is not None else tenacity.stop_never,
            "reraise": True,
            "before_sleep": before_sleep,
        }
