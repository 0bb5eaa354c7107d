"""The rooms of one worker: which ones it is in (``worker_for_room``, RoomService discovery, control
events), joining with the agent token, rejoining a lost room with backoff, leaving
(docs/livekit-source.md, "Rooms this worker joins")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from livekit import api, rtc

from connectors.livekit.api import agent_token
from connectors.livekit.control import END, parse_room_event
from connectors.livekit.registry import JOINED, JoinedRoom
from connectors.livekit.room import RoomHandler
from connectors.livekit.types import LEAVE_TIMEOUT_S, RoomFactory, SourceEvent, StreamFactory
from quantcoach.records import Participant, utc_now_iso
from quantcoach.settings import Settings
from stt.retry import Backoff

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
MAX_JOIN_ATTEMPTS = 6  # per (re)join; a room that still exists is picked up again by the next poll
#: Between (re)join attempts of a room: ~0.5, 1, 2, 4, 8 s ... capped at 30 s, each ±25 %.
JOIN_BACKOFF = Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, jitter=0.25)
#: A room creation time older than this (or in the future) is not trusted as media time zero.
MAX_ROOM_AGE_S = 24 * 3600.0


def worker_for_room(room: str, worker_count: int) -> int:
    """The worker index that joins ``room`` (stable across processes: adler32, not ``hash``)."""
    return zlib.adler32(room.encode()) % worker_count


def fallback_session_id(room: str) -> str:
    """A session id when the server gave no room sid: ``lk-`` + the room's name (sanitised) + a random
    suffix, so that it never collides with another session of the same room name."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", room)[:40]
    return f"lk-{stem}-{secrets.token_hex(6)}"


@dataclass
class _Session:
    """One room session of this worker: survives the agent's rejoins, so media time carries on."""

    name: str
    sid: str = ""  # the LiveKit room's sid: the session id of every record of this room session
    started_at: str | None = None
    t0: float | None = None
    roster: dict[str, Participant] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    room: Any = None
    handler: RoomHandler | None = None
    leaving: bool = False
    leave_reason: str = "shutdown"
    over: bool = False  # the room itself finished (or removed us): a stale listing must not rejoin it
    successor: str = ""  # the sid of a room created again under this name while we were away
    joined: bool = False  # in the room at least once (a rejoin checks that it is still the same room)
    rejoin: bool = False  # a new room of this name started while this session was being left


class RoomSupervisor:
    """Runs on the worker's loop thread: which rooms to be in, joining, rejoining, leaving."""

    FINISHED_SIDS = 10_000

    def __init__(
        self,
        *,
        settings: Settings,
        worker_index: int,
        worker_count: int,
        emit: Callable[[SourceEvent], None],
        on_room_closed: Callable[[str], None],
        on_done: Callable[[], None],
        rooms: list[str],
        discover: bool,
        has_control: bool,
        room_factory: RoomFactory,
        stream_factory: StreamFactory,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._index, self._count = worker_index, worker_count
        self._emit = emit
        self._on_room_closed = on_room_closed
        self._on_done = on_done
        self._initial = rooms
        self._discover = discover
        self._control_open = has_control
        self._room_factory = room_factory
        self._stream_factory = stream_factory
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._finished_sids: OrderedDict[str, None] = OrderedDict()  # stale listings are not rejoined
        self._discovery: asyncio.Task[None] | None = None
        self._leaving: set[asyncio.Task[None]] = set()  # handler.leave() tasks still running
        self._stopping = False
        self._done = False

    def owns(self, room: str) -> bool:
        return worker_for_room(room, self._count) == self._index

    @property
    def rooms(self) -> list[str]:
        return sorted(self._sessions)

    async def start(self) -> None:
        for name in self._initial:
            self.want(name)
        if self._discover:
            self._discovery = asyncio.get_running_loop().create_task(self._discover_rooms(), name="discover")
        self._check_done()

    def want(self, name: str, sid: str = "") -> None:
        """Be in room ``name`` (if it is this worker's), unless already there or it is a finished one.
        A room of that name started while the previous session is still being left is joined once
        that session is closed (the name is reused: another room)."""
        if self._stopping or not self.owns(name):
            return
        if sid and sid in self._finished_sids:
            return
        current = self._sessions.get(name)
        if current is not None:
            if current.leaving and (not sid or sid != current.sid):
                current.rejoin, current.successor = True, sid or current.successor
            return
        session = self._sessions[name] = _Session(name, sid)
        session.task = asyncio.get_running_loop().create_task(self._run_session(session), name=f"room {name}")

    def leave(self, name: str, reason: str) -> None:
        session = self._sessions.get(name)
        if session is None or session.leaving:
            return
        session.leaving, session.leave_reason = True, reason
        if session.handler is not None:
            task = asyncio.get_running_loop().create_task(session.handler.leave(reason))
            self._leaving.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._leaving.discard)
        elif session.task is not None:
            session.task.cancel()  # still connecting, or waiting to retry

    def on_control(self, raw: Any) -> None:
        if raw is END:
            self._control_open = False
            self._check_done()
            return
        try:
            control = parse_room_event(raw)
        except ValueError as exc:
            log.warning("ignored a malformed room control event: %s", exc)
            return
        if control.event == "room_started":
            self.want(control.room, control.sid)
        else:
            session = self._sessions.get(control.room)
            if session is not None and (not control.sid or not session.sid or control.sid == session.sid):
                self.leave(control.room, "room_finished")

    def stop(self) -> None:
        """Leave every room (TrackEnd ``shutdown``), take no new ones; done once all are left."""
        self._stopping = True
        if self._discovery is not None:
            self._discovery.cancel()
        for name in list(self._sessions):
            self.leave(name, "shutdown")
        self._check_done()

    async def shutdown(self) -> None:
        """``stop()`` and wait until every room is left (for ``close()``)."""
        self.stop()
        tasks = [s.task for s in self._sessions.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=LEAVE_TIMEOUT_S + 1)

    # internals ------------------------------------------------------------------------------------
    def _check_done(self) -> None:
        if self._done or self._sessions:
            return
        if self._stopping or not (self._discover or self._control_open):
            self._done = True
            self._on_done()

    async def _run_session(self, s: _Session) -> None:
        attempt = 0
        try:
            while not s.leaving:
                room = s.room = self._room_factory(s.name)
                handler = RoomHandler(
                    s.name,
                    self._emit,
                    chunk_ms=self._settings.chunk_ms,
                    clock=self._clock,
                    t0=s.t0,
                    stream_factory=self._stream_factory,
                    agent_identity=self._settings.agent_identity,
                    roster=s.roster,
                )
                lost = asyncio.Event()
                handler.on_disconnected = lambda _reason, lost=lost: lost.set()
                handler.attach(room)
                token = ""
                try:
                    token = agent_token(self._settings, s.name)
                    options = rtc.RoomOptions(auto_subscribe=False)  # audio only: we subscribe ourselves
                    await asyncio.wait_for(
                        room.connect(self._settings.livekit_url, token, options), CONNECT_TIMEOUT_S
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    # the SDK puts the token in its signalling URL: never let an error message carry it
                    why = (str(exc) or type(exc).__name__).replace(token or "\0", "<token>")
                    if attempt >= MAX_JOIN_ATTEMPTS:
                        log.error("giving up on room %s after %d failed joins (%s)", s.name, attempt, why)
                        return
                    delay = JOIN_BACKOFF.delay(attempt)
                    log.warning("joining room %s failed (%s); retry in %.1f s", s.name, why, delay)
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                if s.t0 is None:
                    s.t0, created = _media_zero(room, self._clock())
                    s.started_at = s.started_at or created
                s.handler = handler
                if s.leaving:  # asked to leave while connecting (wait_for can swallow that cancel)
                    await handler.leave(s.leave_reason)
                    s.handler = s.room = None
                    return
                sid = await _room_sid(room)
                if s.joined and sid and sid != s.sid and not s.sid.startswith("lk-"):
                    # The room was deleted and created again under its name while the agent was away:
                    # that is another session. The old one is over (its tracks end as room_finished);
                    # the new room is joined afresh, with its own sid, roster and media time.
                    log.info("room %s was created again (%s after %s): a new session", s.name, sid, s.sid)
                    handler.session_id, handler.started_at = s.sid, s.started_at
                    await handler.leave("room_finished")
                    s.handler = s.room = None
                    s.over, s.successor = True, sid
                    return
                s.sid, s.joined = s.sid or sid, True
                if not s.sid:  # no sid from the server: a session of this join, still unique
                    s.sid = fallback_session_id(s.name)
                s.started_at = s.started_at or utc_now_iso()
                handler.session_id, handler.started_at = s.sid, s.started_at
                handler.start(s.t0)
                JOINED.add(s.name, JoinedRoom(room, asyncio.get_running_loop(), handler))
                log.info("joined room %s (worker %d/%d)", s.name, self._index, self._count)
                await lost.wait()
                JOINED.remove(s.name, room)
                s.handler = s.room = None
                if handler.room_over or s.leaving:
                    s.over = (handler.room_over and not s.leaving) or s.leave_reason == "room_finished"
                    return
                attempt += 1
                if attempt >= MAX_JOIN_ATTEMPTS:
                    log.error("room %s keeps dropping the agent; giving up", s.name)
                    return
                delay = JOIN_BACKOFF.delay(attempt)
                log.warning("lost room %s; rejoining in %.1f s", s.name, delay)
                await asyncio.sleep(delay)
        except Exception:
            log.exception("room %s: session failed", s.name)
        finally:
            await self._close_session(s)

    async def _close_session(self, s: _Session) -> None:
        if s.room is not None:
            JOINED.remove(s.name, s.room)
        if s.handler is not None:  # cancelled while in the room (shutdown)
            with contextlib.suppress(Exception):
                await s.handler.leave(s.leave_reason)
        elif s.room is not None:  # cancelled while connecting: make sure the half-open room is left
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.room.disconnect(), LEAVE_TIMEOUT_S)
        if self._sessions.get(s.name) is s:
            del self._sessions[s.name]
        if s.sid and s.over:  # not after failed joins: the next poll may try the room again
            self._finished_sids[s.sid] = None
            while len(self._finished_sids) > self.FINISHED_SIDS:
                self._finished_sids.popitem(last=False)
        self._on_room_closed(s.name)
        log.info("left room %s", s.name)
        if s.successor or s.rejoin:
            self.want(s.name, s.successor)
        self._check_done()

    async def _discover_rooms(self) -> None:
        lkapi = api.LiveKitAPI(
            self._settings.livekit_url,
            self._settings.livekit_api_key.reveal(),
            self._settings.livekit_api_secret.reveal(),
        )
        failures = 0
        try:
            while True:
                try:
                    listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if failures == 1 or failures % 20 == 0:  # rate-limited: a server down for long
                        log.warning("RoomService ListRooms failed (%d in a row): %s", failures, exc)
                else:
                    failures = 0
                    for room in listed.rooms:
                        self.want(room.name, room.sid)
                await asyncio.sleep(self._settings.room_poll_s)
        finally:
            with contextlib.suppress(Exception):
                await lkapi.aclose()


def _media_zero(room: Any, now: float, wall: Callable[[], float] = time.time) -> tuple[float, str | None]:
    """Media time zero of a session, on the supervisor's clock, and its start (ISO 8601): the room's
    creation on the server, so that an agent that joins late, or a flow restarted mid-session, keeps
    the media time of the records already written; the agent's first join where the server gives none."""
    created = getattr(room, "creation_time", None)  # rtc.Room: a UTC datetime (epoch 0 when unknown)
    try:
        age = wall() - created.timestamp()
    except (AttributeError, TypeError, ValueError, OverflowError):
        return now, None
    if not 0 <= age <= MAX_ROOM_AGE_S:
        return now, None
    return now - age, created.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _room_sid(room: Any) -> str:
    try:
        return str(await asyncio.wait_for(room.sid, 2.0))
    except Exception:
        return ""
