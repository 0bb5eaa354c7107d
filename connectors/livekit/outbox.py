"""``AudioOutbox``: the bounded hand-off from the worker's loop thread to ``next_batch``
(docs/livekit-source.md, "Threads and hand-off")."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from connectors.livekit.types import MAX_BATCH, SourceEvent
from quantcoach.records import AudioChunk, TrackEnd, participant_key

log = logging.getLogger(__name__)

DROP_LOG_EVERY_S = 5.0


class AudioOutbox:
    """The bounded hand-off between the SDK thread (``put``) and ``next_batch`` (``drain``).

    ``queue.Queue(maxsize)`` bounds what waits. When it is full, an AudioChunk is dropped (counted per
    participant, logged at most every ``DROP_LOG_EVERY_S`` per participant); an announce or a TrackEnd is
    held, in order, on the side, and while anything is held later chunks are dropped too, so nothing
    overtakes it. ``drain`` takes the held events once the queue is empty: per-participant order is kept.
    """

    def __init__(self, maxsize: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: queue.Queue[SourceEvent] = queue.Queue(maxsize)
        self._held: deque[SourceEvent] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self.dropped: Counter[str] = Counter()  # participant key -> chunks dropped
        self.dropped_s: Counter[str] = Counter()  # participant key -> seconds of audio dropped
        self._last_log: dict[str, float] = {}

    def put(self, event: SourceEvent) -> bool:
        """Never blocks; False when the event (an audio chunk) was dropped."""
        with self._lock:
            if isinstance(event, AudioChunk):
                if not self._held:
                    try:
                        self._queue.put_nowait(event)
                        return True
                    except queue.Full:
                        pass
                self._drop(event)
                return False
            if not self._held:
                try:
                    self._queue.put_nowait(event)
                except queue.Full:
                    self._held.append(event)
            else:
                self._held.append(event)
        if isinstance(event, TrackEnd):
            key = participant_key(event.room, event.participant, event.session_id)
            if self.dropped[key]:
                log.warning(
                    "%s ended; %d chunk(s) (%.1f s of audio) were dropped in all because the flow lagged",
                    key,
                    self.dropped[key],
                    self.dropped_s[key],
                )
        return True

    def drain(self, max_items: int = MAX_BATCH) -> list[SourceEvent]:
        items: list[SourceEvent] = []
        while len(items) < max_items:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        else:
            return items
        with self._lock:  # the queue is empty: held events are next in line
            while self._held and len(items) < max_items:
                items.append(self._held.popleft())
        return items

    def __len__(self) -> int:
        return self._queue.qsize() + len(self._held)

    def _drop(self, chunk: AudioChunk) -> None:
        key = participant_key(chunk.room, chunk.participant, chunk.session_id)
        self.dropped[key] += 1
        self.dropped_s[key] += chunk.duration
        now = self._clock()
        if now - self._last_log.get(key, -1e18) >= DROP_LOG_EVERY_S:
            self._last_log[key] = now
            log.warning(
                "source queue full: dropped audio of %s (%d chunk(s), %.1f s so far); the flow is lagging",
                key,
                self.dropped[key],
                self.dropped_s[key],
            )
