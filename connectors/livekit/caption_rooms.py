"""Captions for rooms this process has not joined: one publish-only LiveKit connection per room.

When the flow runs as several processes (``bytewax.run -w N -i I -a ...``), a transcript may be routed
to a worker of a process whose agent is not in that room (each room is joined by one worker, chosen by
``worker_for_room``). ``CaptionRooms`` then opens, lazily and once per room, a connection of its own: a
hidden agent with an identity of its own (``<AGENT_IDENTITY>-captions-<hex>``, so that it never takes
the transcribing agent's place) that may publish data and nothing else (``api.caption_token``).

Everything but ``send``'s hand-over runs on one loop thread, so the state needs no locks. A room's
captions go out one after the other, in order; those sent while it connects wait for the connection.
A failed connect drops the waiting captions (counted) and the room's later captions until its backoff
has passed, then the next one tries again. A room is joined only while RoomService lists it under the
caption's session (the room sid): LiveKit creates a room on join, and a late caption must not bring a
finished room back. Idle connections close after ``IDLE_S``; at most ``MAX_ROOMS`` are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from livekit import api, rtc

from connectors.captions import ATTR_TRACK_ID, Caption, stream_caption
from connectors.livekit.api import caption_token
from connectors.livekit.types import LEAVE_TIMEOUT_S, RoomFactory
from quantcoach.aio import LoopThread
from quantcoach.settings import Settings
from stt.retry import Backoff

log = logging.getLogger(__name__)

IDLE_S = 120.0  # no caption for this long: the connection is closed (a later caption opens it again)
MAX_ROOMS = 256  # connections one process holds; the least recently used goes first
MAX_WAITING = 256  # captions of one room waiting for its connection; beyond, the oldest are dropped
CONNECT_TIMEOUT_S = 20.0
LOOKUP_TIMEOUT_S = 5.0
STREAM_TIMEOUT_S = 10.0  # one stuck stream must not hold the room's later captions for ever
#: Between connect attempts of one room: ~1, 2, 4 ... s capped at 60 s, each ±25 %.
CONNECT_BACKOFF = Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, jitter=0.25)
FALLBACK_SESSION_PREFIX = "lk-"  # supervisor.fallback_session_id: no server sid to compare with

#: ``room name -> its sid``, or None when the room is not open on the server.
RoomLookup = Callable[[str], Awaitable[str | None]]


class RoomServiceLookup:
    """``RoomLookup`` through RoomService ListRooms; its aiohttp session is made on the first call (on
    the loop it belongs to)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._api: api.LiveKitAPI | None = None

    async def __call__(self, name: str) -> str | None:
        if self._api is None:
            s = self._settings
            key, secret = s.livekit_api_key.reveal(), s.livekit_api_secret.reveal()
            self._api = api.LiveKitAPI(s.livekit_url, key, secret)
        listed = await self._api.room.list_rooms(api.ListRoomsRequest(names=[name]))
        return next((r.sid for r in listed.rooms if r.name == name), None)

    async def aclose(self) -> None:
        lkapi, self._api = self._api, None
        if lkapi is not None:
            await lkapi.aclose()


def audio_track_sid(room: Any, identity: str) -> str:
    """The sid of ``identity``'s audio track as ``room`` sees it: the microphone first, else any audio."""
    participant = room.remote_participants.get(identity)
    if participant is None:
        return ""
    audio = [p for p in participant.track_publications.values() if p.kind == rtc.TrackKind.KIND_AUDIO]
    mic = [p for p in audio if getattr(p, "source", None) == rtc.TrackSource.SOURCE_MICROPHONE]
    return str((mic or audio)[0].sid) if audio else ""


def _same_session(listed_sid: str, session_id: str) -> bool:
    if not listed_sid or not session_id or session_id.startswith(FALLBACK_SESSION_PREFIX):
        return True  # nothing to compare: trust the listing
    return listed_sid == session_id


class _NotOpen(Exception):
    pass


@dataclass(eq=False)
class _Link:
    """One room's caption connection, connected or not, and the captions waiting for it."""

    name: str
    session_id: str
    room: Any = None  # the connected rtc.Room, None until connected (and once lost)
    waiting: deque[Caption] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None  # connects and sends ``waiting``, in order
    last_used: float = 0.0
    failures: int = 0  # failed connects in a row
    retry_at: float = 0.0  # no connect before this (clock seconds)
    closed: bool = False


class CaptionRooms:
    """Publish-only caption connections of one process, shared by its caption transports.

    ``send`` may be called from any thread and never blocks. Counters: ``sent``, ``failed`` (captions),
    ``connects`` and ``connect_failures``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        room_factory: RoomFactory | None = None,
        lookup: RoomLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = IDLE_S,
        max_rooms: int = MAX_ROOMS,
        backoff: Backoff = CONNECT_BACKOFF,
    ) -> None:
        self._settings = settings
        self._room_factory: RoomFactory = room_factory or (lambda _name: rtc.Room())  # made on the loop
        self._given_lookup = lookup
        self._lookup: RoomLookup | None = None
        self._clock = clock
        self._idle_s = idle_s
        self._max_rooms = max(1, max_rooms)
        self._backoff = backoff
        self._links: OrderedDict[str, _Link] = OrderedDict()  # least recently used first
        self._closing: set[asyncio.Task[None]] = set()
        self._thread: LoopThread | None = None
        self._lock = threading.Lock()
        self._users = 0
        self.sent = self.failed = self.connects = self.connect_failures = 0

    # any thread -------------------------------------------------------------------------------------
    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        """One user (a sink partition's transport) is done; the last one closes every connection."""
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.close()

    def send(self, room: str, session_id: str, caption: Caption) -> None:
        self._loop().loop.call_soon_threadsafe(self._accept, room, session_id, caption)

    def sweep(self) -> int:
        """Close the connections idle for ``idle_s`` now (a task does it every ``idle_s / 4``)."""
        thread = self._thread
        return thread.call(self._sweep(), LEAVE_TIMEOUT_S + 1) if thread is not None and thread.alive else 0

    def open_rooms(self) -> list[str]:
        """The rooms connected now."""
        thread = self._thread
        if thread is None or not thread.alive:
            return []

        async def names() -> list[str]:
            return [name for name, link in self._links.items() if link.room is not None]

        return thread.call(names(), 5.0)

    def close(self, timeout: float = LEAVE_TIMEOUT_S + 1) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None or not thread.alive:
            return
        with contextlib.suppress(Exception):  # best effort at shutdown
            thread.call(self._close_all(), timeout)
        thread.stop()

    def _loop(self) -> LoopThread:
        with self._lock:
            if self._thread is None or not self._thread.alive:
                self._thread = LoopThread("quantcoach-captions")
                self._thread.submit(self._sweep_forever())
            return self._thread

    # the loop thread --------------------------------------------------------------------------------
    def _accept(self, name: str, session_id: str, caption: Caption) -> None:
        now = self._clock()
        link = self._links.get(name)
        if link is not None and link.session_id != session_id:
            self._drop(link, "the room has a new session")  # created again under the same name
            link = None
        if link is None:
            link = self._links[name] = _Link(name, session_id)
            while len(self._links) > self._max_rooms:
                self._drop(next(iter(self._links.values())), "too many caption rooms")
        self._links.move_to_end(name)
        link.last_used = now
        if link.room is None and link.task is None and now < link.retry_at:
            self.failed += 1  # its last connect failed: wait out the backoff, do not hammer the server
            return
        if len(link.waiting) >= MAX_WAITING:
            link.waiting.popleft()
            self.failed += 1
        link.waiting.append(caption)
        if link.task is None:
            link.task = asyncio.get_running_loop().create_task(self._run(link), name=f"captions {name}")

    async def _run(self, link: _Link) -> None:
        try:
            while link.waiting and not link.closed:
                if link.room is None and not await self._connect(link):
                    self._fail_waiting(link)
                    return
                await self._stream(link, link.waiting.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("captions for room %s failed", link.name)
            self._fail_waiting(link)
        finally:
            if link.task is asyncio.current_task():
                link.task = None

    async def _connect(self, link: _Link) -> bool:
        room: Any = None
        token = ""
        try:
            if self._lookup is None:
                self._lookup = self._given_lookup or RoomServiceLookup(self._settings)
            sid = await asyncio.wait_for(self._lookup(link.name), LOOKUP_TIMEOUT_S)
            if sid is None or not _same_session(sid, link.session_id):
                raise _NotOpen("not open under this session")
            identity = f"{self._settings.agent_identity}-captions-{secrets.token_hex(4)}"
            room = self._room_factory(link.name)
            room.on("disconnected", lambda *_args, r=room: self._lost(link, r))
            token = caption_token(self._settings, link.name, identity)
            options = rtc.RoomOptions(auto_subscribe=False)  # publishes captions, never listens
            connecting = room.connect(self._settings.livekit_url, token, options)
            await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
        except asyncio.CancelledError:
            if room is not None:
                self._disconnect_later(room)
            raise
        except Exception as exc:
            if room is not None:
                self._disconnect_later(room)
            link.failures += 1
            self.connect_failures += 1
            delay = self._backoff.delay(link.failures)
            link.retry_at = self._clock() + delay
            # the SDK puts the token in its signalling URL: never let an error message carry it
            reason = (str(exc) or type(exc).__name__).replace(token or "\0", "<token>")
            log.warning(
                "caption connection to room %s failed (%s; %d so far); %d waiting caption(s) dropped, "
                "next try in %.1f s at the earliest",
                link.name, reason, self.connect_failures, len(link.waiting), delay,
            )  # fmt: skip
            return False
        link.room, link.failures, link.retry_at = room, 0, 0.0
        self.connects += 1
        log.info("caption connection to room %s open (a room of another process)", link.name)
        return True

    async def _stream(self, link: _Link, caption: Caption) -> None:
        room = link.room
        if not caption.attributes.get(ATTR_TRACK_ID):  # the caller is not in the room: ask ours
            sid = audio_track_sid(room, caption.sender_identity)
            if sid:
                caption = replace(caption, attributes={**caption.attributes, ATTR_TRACK_ID: sid})
        try:
            await asyncio.wait_for(stream_caption(room, caption), STREAM_TIMEOUT_S)
            self.sent += 1
        except Exception as exc:
            self.failed += 1
            who, n = caption.sender_identity, self.failed
            log.warning("caption stream for %s in room %s failed (%d so far): %s", who, link.name, n, exc)

    def _lost(self, link: _Link, room: Any) -> None:
        if link.room is room:
            link.room = None  # the next caption connects again
            if not link.closed:
                log.info("caption connection to room %s lost", link.name)

    def _drop(self, link: _Link, why: str) -> None:
        link.closed = True
        if self._links.get(link.name) is link:
            del self._links[link.name]
        self._fail_waiting(link)
        if link.task is not None:
            link.task.cancel()
            link.task = None
        if link.room is not None:
            room, link.room = link.room, None
            self._disconnect_later(room)
            log.info("caption connection to room %s closed (%s)", link.name, why)

    def _fail_waiting(self, link: _Link) -> None:
        self.failed += len(link.waiting)
        link.waiting.clear()

    def _disconnect_later(self, room: Any) -> None:
        async def leave() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), LEAVE_TIMEOUT_S)

        task = asyncio.get_running_loop().create_task(leave())
        self._closing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._closing.discard)

    async def _sweep(self) -> int:
        now = self._clock()
        idle = [k for k in self._links.values() if k.task is None and now - k.last_used >= self._idle_s]
        for link in idle:
            self._drop(link, "idle")
        await self._settle()
        return len(idle)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(self._idle_s / 4, 30.0)))
            with contextlib.suppress(Exception):
                await self._sweep()

    async def _close_all(self) -> None:
        for link in list(self._links.values()):
            self._drop(link, "closing")
        await self._settle()
        lookup, self._lookup = self._lookup, None
        aclose = getattr(lookup, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

    async def _settle(self) -> None:
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=LEAVE_TIMEOUT_S)
