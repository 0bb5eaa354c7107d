"""The rooms this process is in, for the parts of the flow that talk back to them (live captions).

The supervisor of each worker adds a room once joined and removes it when it leaves; the caption sink,
which runs on whichever worker Bytewax routes a transcript to, looks the room up here by name and
schedules its text streams on that room's own loop. A room held by another process (the flow run as
several Bytewax processes) is not found here: its captions go through a publish-only connection of
this process instead (``connectors.livekit.caption_rooms``).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JoinedRoom:
    room: Any  # rtc.Room
    loop: asyncio.AbstractEventLoop
    handler: Any  # RoomHandler: the session id and the transcribed tracks


class JoinedRooms:
    def __init__(self) -> None:
        self._rooms: dict[str, JoinedRoom] = {}
        self._lock = threading.Lock()

    def add(self, name: str, joined: JoinedRoom) -> None:
        with self._lock:
            self._rooms[name] = joined

    def remove(self, name: str, room: Any) -> None:
        with self._lock:
            if name in self._rooms and self._rooms[name].room is room:
                del self._rooms[name]

    def get(self, name: str) -> JoinedRoom | None:
        with self._lock:
            return self._rooms.get(name)

    def track_sid(self, name: str, identity: str) -> str:
        joined = self.get(name)
        return joined.handler.track_sid(identity) if joined is not None else ""


#: This process's rooms.
JOINED = JoinedRooms()
