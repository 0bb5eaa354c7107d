"""``LiveKitSource``: live LiveKit rooms as a Bytewax ``DynamicSource``, one partition per worker that
runs the worker's rooms on a loop thread of its own. Its contract is docs/livekit-source.md."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from livekit import rtc

from connectors.live_recorder import LiveRecorder
from connectors.livekit.chunker import sdk_audio_stream
from connectors.livekit.control import ControlFeed
from connectors.livekit.outbox import AudioOutbox
from connectors.livekit.supervisor import RoomSupervisor
from connectors.livekit.types import (
    LEAVE_TIMEOUT_S,
    MAX_BATCH,
    NUM_CHANNELS,
    SAMPLE_RATE,
    RoomEvents,
    RoomFactory,
    SourceEvent,
    StreamFactory,
)
from quantcoach.aio import LoopThread
from quantcoach.settings import Settings

log = logging.getLogger(__name__)

IDLE_BACKOFF_MAX_S = 0.05


class _LiveKitPartition(StatelessSourcePartition[SourceEvent]):
    def __init__(self, source: LiveKitSource, worker_index: int, worker_count: int) -> None:
        self._source = source
        self._outbox = AudioOutbox(source.queue_size)
        self._recorder = (
            LiveRecorder(source.record_dir, SAMPLE_RATE, NUM_CHANNELS) if source.record_dir else None
        )
        self._done = threading.Event()
        self._idle_s = 0.0
        self._stop_sent = False
        self._loop = LoopThread(f"livekit-w{worker_index}")
        self.supervisor = RoomSupervisor(
            settings=source.settings,
            worker_index=worker_index,
            worker_count=worker_count,
            emit=self._emit,
            on_room_closed=self._room_closed,
            on_done=self._done.set,
            rooms=source.rooms,
            discover=source.discover,
            has_control=source.room_events is not None,
            room_factory=source.room_factory,
            stream_factory=source.stream_factory,
            clock=source.clock,
        )
        self._loop.call(self.supervisor.start())
        if source.control_feed is not None:
            source.control_feed.subscribe(worker_index, worker_count, self._control)

    @property
    def outbox(self) -> AudioOutbox:
        return self._outbox

    # called on the loop thread
    def _emit(self, event: SourceEvent) -> None:
        if self._recorder is not None:
            self._recorder.handle(event)  # before the queue: a lagging flow never costs the recording
        self._outbox.put(event)

    def _room_closed(self, room: str) -> None:
        if self._recorder is not None:
            self._recorder.end_room(room)

    # called on reader threads
    def _control(self, event: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: shutting down
            self._loop.loop.call_soon_threadsafe(self.supervisor.on_control, event)

    # Bytewax side
    def next_batch(self) -> list[SourceEvent]:
        if self._source.stop_requested and not self._stop_sent:
            self._stop_sent = True
            self._loop.loop.call_soon_threadsafe(self.supervisor.stop)
        done = self._done.is_set()  # read before draining: all events are queued once it is set
        batch = self._outbox.drain(MAX_BATCH)
        if batch:
            self._idle_s = 0.0
            return batch
        if done:
            raise StopIteration
        if not self._loop.alive:
            raise RuntimeError("the LiveKit loop thread died")
        self._idle_s = min(IDLE_BACKOFF_MAX_S, max(0.001, self._idle_s * 2))
        return []

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(seconds=self._idle_s) if self._idle_s else None

    def close(self) -> None:
        if self._loop.alive:
            try:
                self._loop.call(self.supervisor.shutdown(), timeout=LEAVE_TIMEOUT_S + 5)
            except Exception:
                log.warning("leaving rooms on close did not finish cleanly", exc_info=True)
            self._loop.stop()
        if self._recorder is not None:
            self._recorder.close()


class LiveKitSource(DynamicSource[SourceEvent]):
    """Live LiveKit rooms as a Bytewax ``DynamicSource`` (docs/livekit-source.md).

    :arg settings: ``LIVEKIT_URL``/``_API_KEY``/``_API_SECRET``, ``AGENT_IDENTITY``, ``ROOM_POLL_S``,
        ``CHUNK_MS``, ``TOKEN_TTL_S``.
    :arg rooms: rooms to join from the start (each worker joins its share).
    :arg discover: poll RoomService ``ListRooms`` every ``ROOM_POLL_S`` and join new rooms.
    :arg room_events: control events ``{"event": "room_started" | "room_finished", "room": name}``
        (mappings or JSON; malformed ones are logged and skipped), as either
        - an iterable (a list, a generator, a Kafka consumer: iterated on a thread of its own, so it may
          block) or a ``queue.Queue`` (``None`` ends it), read once and shared by the process's workers, or
        - a callable ``(worker_index, worker_count) -> iterable``, called once per worker: one feed each
          (for a Kafka consumer per worker; each must see every event, i.e. not split by a group).
    :arg record_dir: also write each room in the recorded-session format (``connectors.live_recorder``).
    :arg queue_size: chunks waiting for ``next_batch`` per worker before audio is dropped.
    :arg room_factory, stream_factory, clock: the SDK's ``rtc.Room``, ``rtc.AudioStream`` and
        ``time.monotonic`` by default; tests pass fakes.

    The source ends (``StopIteration`` once everything is handed out) when ``stop()`` was called and every
    room is left, or, with ``discover`` off, when the control feed has ended (or there is none) and every
    room has finished. ``stop()`` may be called from any thread, e.g. a signal handler.
    """

    def __init__(
        self,
        settings: Settings,
        rooms: list[str] | None = None,
        discover: bool = True,
        room_events: RoomEvents | None = None,
        record_dir: str | None = None,
        *,
        queue_size: int = 1000,
        room_factory: RoomFactory | None = None,
        stream_factory: StreamFactory = sdk_audio_stream,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.livekit_configured:
            raise ValueError("the LiveKit source needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.settings = settings
        self.rooms = list(dict.fromkeys(rooms or ()))
        self.discover = discover
        self.room_events = room_events
        self.record_dir = record_dir
        self.queue_size = queue_size
        self.room_factory: RoomFactory = room_factory or (lambda _name: rtc.Room())
        self.stream_factory = stream_factory
        self.clock = clock
        self._stop = threading.Event()
        #: the control events, read once per process or once per worker (``room_events``' kind)
        self.control_feed = ControlFeed(room_events) if room_events is not None else None

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LiveKitPartition:
        return _LiveKitPartition(self, worker_index, worker_count)

    def stop(self) -> None:
        """Ask every worker to leave its rooms (TrackEnd ``shutdown`` for all) and end the source."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()
