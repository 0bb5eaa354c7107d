"""One decode thread per engine, scheduled so that a backlog stays bounded in what it may skip.

Finals (a closed utterance or window) are never dropped and run first, in submit order. Partials
(interim decodes of an utterance still open) run only when no final is queued, and a stream has at
most one queued: a newer partial replaces the older one, and a stream drops its queued partial once
the utterance closes. So when decoding falls behind, the only work that grows is finals, one per
utterance, and everything skipped is a partial that a later result supersedes. ``stats`` counts both.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class SchedulerStats:
    finals_done: int = 0
    partials_done: int = 0
    partials_skipped: int = 0  # replaced by a newer one, or dropped when the utterance closed
    max_finals_queued: int = 0


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: Future[Any]
    final: bool


class DecodeScheduler:
    def __init__(self, name: str = "decode") -> None:
        self.stats = SchedulerStats()
        self._cv = threading.Condition()
        self._finals: deque[_Job] = deque()
        self._partials: dict[str, _Job] = {}  # stream key -> its one queued partial (oldest first)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit_final(self, fn: Callable[[], Any]) -> Future[Any]:
        job = _Job(fn, Future(), final=True)
        with self._cv:
            self._check_open()
            self._finals.append(job)
            self.stats.max_finals_queued = max(self.stats.max_finals_queued, len(self._finals))
            self._cv.notify()
        return job.future

    def submit_partial(self, key: str, fn: Callable[[], Any]) -> Future[Any]:
        job = _Job(fn, Future(), final=False)
        with self._cv:
            self._check_open()
            self._drop(key)
            self._partials[key] = job
            self._cv.notify()
        return job.future

    def drop_partial(self, key: str) -> None:
        """Forget ``key``'s queued partial (its utterance closed); one already running finishes."""
        with self._cv:
            self._drop(key)

    def queued(self) -> tuple[int, int]:
        """(finals, partials) waiting, not counting the one running."""
        with self._cv:
            return len(self._finals), len(self._partials)

    def close(self) -> None:
        """Cancel what is queued and stop the thread after the decode running now."""
        with self._cv:
            self._closed = True
            for job in [*self._finals, *self._partials.values()]:
                job.future.cancel()
            self._finals.clear()
            self._partials.clear()
            self._cv.notify_all()

    # -- internals -----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("decode scheduler is closed")

    def _drop(self, key: str) -> None:
        old = self._partials.pop(key, None)
        if old is not None and old.future.cancel():
            self.stats.partials_skipped += 1

    def _next(self) -> _Job | None:
        with self._cv:
            while not (self._finals or self._partials or self._closed):
                self._cv.wait()
            if self._finals:
                return self._finals.popleft()
            if self._partials:
                return self._partials.pop(next(iter(self._partials)))
            return None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn()
            except BaseException as exc:  # handed to whoever polls the future
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            with self._cv:
                if job.final:
                    self.stats.finals_done += 1
                else:
                    self.stats.partials_done += 1
