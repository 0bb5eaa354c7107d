"""Control events: ``room_started`` / ``room_finished`` for a room, parsed (``parse_room_event``) and
fed to the workers (``ControlFeed``), one feed shared by the process's workers or one per worker
(docs/livekit-source.md, "Rooms this worker joins")."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.livekit.types import RoomEvents

log = logging.getLogger(__name__)

END = object()  # end of a control-event feed, handed to the callback last


@dataclass(frozen=True, slots=True)
class RoomControl:
    """A parsed control event: ``room_started`` or ``room_finished`` for ``room`` (``sid`` if known)."""

    event: str
    room: str
    sid: str = ""


def parse_room_event(raw: Any) -> RoomControl:
    """Accepts ``{"event", "room"[, "sid"], ...}`` (the ``quantcoach.room_event/1`` record of
    ``connectors.kafka.room_events``; LiveKit's webhook shape, ``room`` an object with ``name``/``sid``, too)
    as a mapping, JSON text/bytes or a Kafka ``ConsumerRecord``; raises ``ValueError`` saying why not."""
    if not isinstance(raw, Mapping | bytes | bytearray | str) and hasattr(raw, "value"):
        raw = raw.value  # a kafka-python ConsumerRecord
    if isinstance(raw, bytes | bytearray | str):
        raw = json.loads(raw)
    if not isinstance(raw, Mapping):
        raise ValueError("control event is not an object")
    event, room, sid = raw.get("event"), raw.get("room"), raw.get("sid") or ""
    if isinstance(room, Mapping):
        room, sid = room.get("name"), room.get("sid") or sid
    if event not in ("room_started", "room_finished"):
        raise ValueError(f"unknown control event {event!r}")
    if not isinstance(room, str) or not room:
        raise ValueError("control event without a room name")
    return RoomControl(event, room, str(sid))


class _Broadcast:
    """Reads one shared iterable on its own thread and hands every event to every subscribed worker
    of this process (each worker filters its own rooms); late subscribers get the history replayed."""

    HISTORY = 10_000

    def __init__(self, events: Iterable[Any]) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._history: deque[Any] = deque(maxlen=self.HISTORY)
        self._subscribers: list[Callable[[Any], None]] = []
        self._ended = False
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Callable[[Any], None]) -> None:
        with self._lock:
            for event in self._history:
                callback(event)
            if self._ended:
                callback(END)
            self._subscribers.append(callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="livekit-room-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                with self._lock:
                    self._history.append(event)
                    for callback in self._subscribers:
                        callback(event)
        except Exception:
            log.exception("room event feed failed; no more control events will be read")
        finally:
            with self._lock:
                self._ended = True
                for callback in self._subscribers:
                    callback(END)


def _feed_thread(events: Callable[[], Iterable[Any]], callback: Callable[[Any], None], name: str) -> None:
    def run() -> None:
        try:
            for event in events():  # built on the thread: making a consumer may block
                callback(event)
        except Exception:
            log.exception("room event feed failed; no more control events will be read")
        finally:
            callback(END)

    threading.Thread(target=run, name=name, daemon=True).start()


class ControlFeed:
    """The source's ``room_events`` (see ``LiveKitSource``), subscribed to once per worker: a callable
    is called per worker and read on a thread of its own; an iterable or ``queue.Queue`` (``None`` ends
    it) is read once, on one thread, and shared by the process's workers."""

    def __init__(self, events: RoomEvents) -> None:
        self._events = events
        self._broadcast: _Broadcast | None = None
        self._lock = threading.Lock()

    def subscribe(self, worker_index: int, worker_count: int, callback: Callable[[Any], None]) -> None:
        """Hand every control event to ``callback`` (on a reader thread), then ``END``."""
        events = self._events
        if callable(events) and not isinstance(events, queue.Queue):
            factory = events
            _feed_thread(
                lambda: factory(worker_index, worker_count), callback, f"livekit-room-events-w{worker_index}"
            )
            return
        with self._lock:
            if self._broadcast is None:
                shared = iter(events.get, None) if isinstance(events, queue.Queue) else events
                self._broadcast = _Broadcast(shared)  # type: ignore[arg-type]
        self._broadcast.subscribe(callback)
