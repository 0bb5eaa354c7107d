"""``ElevenLabsStream``: one participant's ``SttStream``, and the loop that runs its sessions.

Threading: the Bytewax worker calls ``push_audio``/``poll``/``settled``/``end_input``; all network work
runs on a loop thread (``quantcoach.aio``). The two sides share the ledger, under its lock; the worker
never waits on the network.

Reliability: every sample not yet covered by a committed transcript is kept. When a session drops (or
answers a retryable error, or stalls) the stream reconnects with jittered exponential backoff
(``stt.retry.Backoff``) and the next session re-sends that audio from its new stream-time origin, so
no final is lost and none is repeated. Non-retryable errors (auth, terms, quota, rejected parameters)
or too many consecutive failures end the stream: ``poll`` raises ``SttError`` once. The API key is
never logged or raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quantcoach.aio import LoopThread
from stt.elevenlabs.connection import Link, scrub
from stt.elevenlabs.ledger import AudioLedger
from stt.elevenlabs.options import ElevenLabsOptions
from stt.elevenlabs.session import Session
from stt.pcm import STT_SAMPLE_RATE, as_int16
from stt.protocol import SttError, SttEvent
from stt.retry import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What every stream of an engine shares."""

    options: ElevenLabsOptions
    link: Callable[[str], Link]  # the connection details for a stream key
    loop: LoopThread
    backoff: Backoff
    count: Callable[[str, int], None]  # engine-wide stats


class ElevenLabsStream:
    """One participant's sessions; see the module docstring for the threading and retry model."""

    def __init__(self, ctx: StreamContext, key: str) -> None:
        self._ctx = ctx
        self._o = ctx.options
        self._key = key
        self._link = ctx.link(key)
        self._clock = self._link.clock
        self._stats_lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._ledger = AudioLedger(key, self._o, self._clock, self._count)
        self._wake = asyncio.Event()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False
        self._future = ctx.loop.submit(self._run())

    def __repr__(self) -> str:
        return f"ElevenLabsStream(key={self._key!r}, pushed_s={self._ledger.pushed / STT_SAMPLE_RATE:.2f})"

    # ---------------------------------------------------------------- worker-thread side (SttStream)
    def push_audio(self, pcm: np.ndarray) -> None:
        if self._ledger.push(as_int16(pcm)):
            self._poke()

    def end_input(self) -> None:
        if self._ledger.end_input():
            self._poke()

    def poll(self) -> list[SttEvent]:
        return self._ledger.poll()

    def settled(self) -> float:
        return self._ledger.settled()

    @property
    def retained_seconds(self) -> float:
        """Audio kept for re-sending (diagnostics; bounded by ``max_retained_s``)."""
        return self._ledger.retained_seconds

    @property
    def done(self) -> bool:
        return self._ledger.done

    def close(self) -> None:
        if self._ledger.close():
            self._future.cancel()

    # ---------------------------------------------------------------- between the threads
    def _poke(self) -> None:
        """Wake the loop-side sender; at most one callback in flight per stream."""
        with self._wake_lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed at interpreter exit
            self._ctx.loop.loop.call_soon_threadsafe(self._do_wake)

    def _do_wake(self) -> None:
        with self._wake_lock:
            self._wake_scheduled = False
        self._wake.set()

    def _count(self, name: str, n: int = 1, *, engine_wide: bool = True) -> None:
        with self._stats_lock:
            self.stats[name] += n
        if engine_wide:
            self._ctx.count(name, n)

    # ---------------------------------------------------------------- loop side: the session loop
    async def _run(self) -> None:
        o, backoff = self._o, self._ctx.backoff
        failures = 0
        try:
            while True:
                if not await self._wait_for_work():
                    return
                session = Session(self._link, o, self._ledger, self._wake, self._count)
                outcome = await session.run()
                self._count(f"outcome_{outcome.kind}")
                if outcome.kind == "finished":
                    self._ledger.finish()
                    return
                if outcome.kind == "fatal":
                    self._give_up(outcome.reason)
                    return
                if outcome.kind == "ended":
                    log.info("elevenlabs %s: session ended (%s)", self._key, outcome.reason)
                    if session.progressed:
                        failures = 0
                    else:  # a benign end that achieved nothing: never reconnect in a tight loop
                        await self._clock.sleep(backoff.delay(1))
                    continue
                failures = 1 if session.progressed else failures + 1
                if failures >= o.max_failures:
                    self._give_up(f"{failures} consecutive session failures, last: {outcome.reason}")
                    return
                delay = backoff.delay(failures)
                log.warning(
                    "elevenlabs %s: session failed (%s); reconnecting in %.2f s (failure %d/%d)",
                    self._key,
                    outcome.reason,
                    delay,
                    failures,
                    o.max_failures,
                )
                await self._clock.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not kill the loop thread or hang the stream
            log.exception("elevenlabs %s: internal error", self._key)
            self._give_up(f"internal error ({type(exc).__name__})")

    async def _wait_for_work(self) -> bool:
        """Until there is speech to send or the input ended; False once finished or closed."""
        while True:
            self._wake.clear()
            work = self._ledger.work()
            if work is not None:
                return work == "speech"
            await self._wake.wait()

    def _give_up(self, reason: str) -> None:
        msg = scrub(f"elevenlabs STT gave up on {self._key}: {reason}", self._link.secret)
        log.error("%s", msg)
        self._count("gave_up")
        self._ledger.fail(SttError(msg))
