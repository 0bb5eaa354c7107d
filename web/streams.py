"""Live event streams, bounded: a cap on open streams per worker, one store poller per worker, and a
send timeout.

- ``StreamSlots``: at most ``SSE_MAX_STREAMS`` streams per worker process (by default the worker's
  threads minus ``REST_THREADS``), so REST calls and ``/health`` always find a thread; over the cap the
  API answers 503 with ``Retry-After``.
- ``SessionPoller``: one thread per worker asks the store, every ``SSE_POLL_S``, for new records of the
  sessions someone is watching, one query per session however many streams watch it, and hands each
  stream what lies past its own position. A stream reads its own backlog first (history), then follows.
- The client's socket gets a send timeout: a client that stops reading is dropped once a write has
  waited ``SSE_SEND_TIMEOUT_S``, so no thread is held much past the stream's ``max_s``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Threads of a worker kept for REST calls when SSE_MAX_STREAMS is 0 (automatic).
REST_THREADS = 4


def stream_cap(configured: int, threads: int) -> int:
    """Streams per worker: ``configured``, or (0) the threads left after ``REST_THREADS``, at least 1."""
    return configured if configured > 0 else max(1, threads - REST_THREADS)


class StreamSlots:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            if self._open >= self.cap:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


@dataclass(eq=False)
class Subscription:
    session_id: str
    after: int
    events: queue.Queue[list[Any] | BaseException] = field(default_factory=queue.Queue)


class SessionPoller:
    """One per worker process. ``read(session_id, after, limit)`` is the store's ``events_after``."""

    def __init__(self, read: Callable[[str, int, int], list[Any]], poll_s: float, batch: int = 500) -> None:
        self._read = read
        self.poll_s = poll_s
        self.batch = batch
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.queries = 0  # store reads made, for tests and metrics

    def subscribe(self, session_id: str, after: int) -> Subscription:
        sub = Subscription(session_id, after)
        with self._lock:
            self._subs.add(sub)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sse-poller", daemon=True)
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def poll_once(self) -> None:
        with self._lock:
            subs = list(self._subs)
        by_session: dict[str, list[Subscription]] = {}
        for sub in subs:
            by_session.setdefault(sub.session_id, []).append(sub)
        for session_id, watchers in by_session.items():
            start = min(w.after for w in watchers)
            try:
                self.queries += 1
                batch = self._read(session_id, start, self.batch)
            except Exception as exc:  # the store is down: every watcher of it ends, and says why
                for w in watchers:
                    w.events.put(exc)
                continue
            for w in watchers:
                mine = [e for e in batch if e.position > w.after]
                if mine:
                    w.after = mine[-1].position
                    w.events.put(mine)

    def _run(self) -> None:
        while True:
            # wait first: a new stream has just read its backlog itself
            self._wake.wait(self.poll_s)
            with self._lock:
                if not self._subs:
                    self._thread = None
                    return
            try:
                self.poll_once()
            except Exception:  # never let the worker's only poller die
                log.exception("event stream poller failed; retrying")


_pollers: dict[int, SessionPoller] = {}
_registry_lock = threading.Lock()


def poller_for(store: Any, poll_s: float, batch: int) -> SessionPoller:
    """The worker's poller for ``store`` (one per store object, i.e. per app in this process)."""
    with _registry_lock:
        found = _pollers.get(id(store))
        if found is None:
            found = _pollers[id(store)] = SessionPoller(store.events_after, poll_s, batch)
        return found
