"""LiveKit server API: RoomService calls and webhook verification for web/, and the tokens (a
participant's per role, the transcription agent's, a caption connection's).

Everything goes through livekit-api. Its RoomService is asyncio/aiohttp while Flask handlers are
synchronous, so calls run on one loop thread per process (``quantcoach.aio.LoopThread``) that owns a
pooled aiohttp session; request threads wait on the result with a deadline. The loop is started lazily
and again after a fork, because gunicorn forks workers after the app may already exist. Roles are
``quantcoach.roles.ROLES``; ``grants_for`` covers each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from google.protobuf.json_format import ParseError
from google.protobuf.message import DecodeError
from livekit.api import AccessToken, TokenVerifier, VideoGrants, WebhookReceiver
from livekit.api.room_service import RoomService
from livekit.api.twirp_client import ServerError
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
)
from livekit.protocol.webhook import WebhookEvent

from quantcoach.aio import LoopThread
from quantcoach.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default deadline for one RoomService call; a LiveKit that does not answer in time is "unreachable".
DEFAULT_TIMEOUT_S = 5.0


# --- errors ------------------------------------------------------------------------------------------
class LiveKitError(Exception):
    """A RoomService call failed; subclasses say how. Messages never carry credentials."""


class LiveKitUnavailable(LiveKitError):
    """LiveKit did not answer, answered 5xx, or timed out."""


class LiveKitRejected(LiveKitError):
    """LiveKit refused the call (bad credentials, invalid argument): a server-side problem for us."""


class RoomNotFound(LiveKitError):
    pass


class WebhookRejected(Exception):
    """A webhook whose signature, token or body hash does not verify."""


class WebhookMalformed(Exception):
    """A webhook that verifies but whose body is not a LiveKit WebhookEvent."""


# --- tokens ------------------------------------------------------------------------------------------
def grants_for(role: str, room: str) -> VideoGrants:
    """The video grants of a participant with ``role`` in ``room`` (the README's table)."""
    if role in ("interviewer", "candidate"):
        return VideoGrants(
            room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
        )
    if role == "agent":
        # The flow's agent listens, hidden from the other participants, and publishes data only: the
        # live captions (lk.transcription text streams). It never publishes media.
        return VideoGrants(
            room_join=True,
            room=room,
            hidden=True,
            agent=True,
            can_subscribe=True,
            can_publish=False,
            can_publish_data=True,
        )
    if role == "participant":
        return VideoGrants(
            room_join=True, room=room, can_subscribe=True, can_publish=False, can_publish_data=False
        )
    raise ValueError(f"unknown role {role!r}")


@dataclass(frozen=True)
class TokenMinter:
    api_key: str
    api_secret: str
    ttl_s: int

    def mint(self, room: str, identity: str, role: str, name: str = "") -> str:
        """A participant JWT; the role rides as attribute ``role`` (the flow labels speakers by it) and,
        for older frontends, as ``{"role": ...}`` metadata."""
        token = (
            AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name(name or identity)
            .with_ttl(dt.timedelta(seconds=self.ttl_s))
            .with_grants(grants_for(role, room))
            .with_attributes({"role": role})
            .with_metadata(json.dumps({"role": role}))
        )
        return token.to_jwt()


def agent_token(settings: Settings, room: str) -> str:
    """A JWT for the hidden transcription agent: join ``room``, subscribe only (the agent's grants)."""
    return _agent_jwt(settings, settings.agent_identity, "QuantCoach transcriber", grants_for("agent", room))


def caption_token(settings: Settings, room: str, identity: str) -> str:
    """A JWT for a publish-only caption connection (``connectors.livekit.caption_rooms``): a hidden agent
    of its own ``identity`` (never ``AGENT_IDENTITY``, which would take the transcribing agent's place)
    that may publish data, the captions, and neither media nor subscribe."""
    grants = grants_for("agent", room)
    grants.can_subscribe = False
    return _agent_jwt(settings, identity, "QuantCoach captions", grants)


def _agent_jwt(settings: Settings, identity: str, name: str, grants: VideoGrants) -> str:
    return (
        AccessToken(settings.livekit_api_key.reveal(), settings.livekit_api_secret.reveal())
        .with_identity(identity)
        .with_name(name)
        .with_kind("agent")
        .with_ttl(dt.timedelta(seconds=settings.token_ttl_s))
        .with_grants(grants)
        .to_jwt()
    )


# --- webhooks ----------------------------------------------------------------------------------------
class WebhookVerifier:
    def __init__(self, api_key: str, api_secret: str) -> None:
        self._receiver = WebhookReceiver(TokenVerifier(api_key, api_secret))

    def verify(self, body: bytes, authorization: str) -> WebhookEvent:
        """Check the JWT (signature, issuer, expiry) and the body's sha256 claim, then parse."""
        token = authorization.removeprefix("Bearer ").strip()
        if not token:
            raise WebhookRejected("missing Authorization token")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("body is not UTF-8") from None
        try:
            return self._receiver.receive(text, token)
        except ParseError:
            raise WebhookMalformed("body is not a LiveKit webhook event") from None
        except Exception as exc:  # WebhookReceiver raises bare Exception / PyJWT / binascii errors
            raise WebhookRejected(type(exc).__name__) from None


# --- RoomService -------------------------------------------------------------------------------------
class RoomsClient:
    """Synchronous RoomService for request threads; one loop thread and aiohttp session per process."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: LoopThread | None = None
        self._svc: RoomService | None = None
        self._session: aiohttp.ClientSession | None = None

    # public calls ------------------------------------------------------------------------------
    def create_room(self, name: str, max_participants: int, empty_timeout: int) -> Room:
        req = CreateRoomRequest(name=name, max_participants=max_participants, empty_timeout=empty_timeout)
        return self._call(lambda svc: svc.create_room(req))

    def list_rooms(self, names: list[str] | None = None, timeout_s: float | None = None) -> list[Room]:
        req = ListRoomsRequest(names=names or [])
        return list(self._call(lambda svc: svc.list_rooms(req), timeout_s).rooms)

    def get_room(self, name: str) -> Room | None:
        rooms = [r for r in self.list_rooms([name]) if r.name == name]
        return rooms[0] if rooms else None

    def list_participants(self, room: str) -> list[ParticipantInfo]:
        req = ListParticipantsRequest(room=room)
        return list(self._call(lambda svc: svc.list_participants(req)).participants)

    def delete_room(self, room: str) -> None:
        self._call(lambda svc: svc.delete_room(DeleteRoomRequest(room=room)))

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether LiveKit answers an authenticated ListRooms within ``timeout_s``."""
        try:
            self.list_rooms(["quantcoach-health-probe"], timeout_s=timeout_s)
        except LiveKitError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            loop, session = self._loop, self._session
            self._loop = self._svc = self._session = None
        if loop is not None and session is not None and self._pid == os.getpid() and loop.alive:
            with contextlib.suppress(Exception):  # best effort at shutdown
                loop.call(session.close(), timeout=2.0)
            loop.stop()

    # plumbing ----------------------------------------------------------------------------------
    def _service(self) -> tuple[LoopThread, RoomService]:
        with self._lock:
            if self._pid != os.getpid() or self._loop is None or self._svc is None or not self._loop.alive:
                # A forked child inherits the parent's loop object but not its thread: start afresh.
                self._loop = LoopThread("quantcoach-livekit")
                self._session = self._loop.call(self._make_session(), timeout=self._timeout_s)
                self._svc = RoomService(self._session, self._url, self._key, self._secret)
                self._pid = os.getpid()
            return self._loop, self._svc

    async def _make_session(self) -> aiohttp.ClientSession:
        # Created on the loop thread: an aiohttp session belongs to the loop it was made on.
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))

    def _call(self, make: Any, timeout_s: float | None = None) -> Any:
        timeout = self._timeout_s if timeout_s is None else timeout_s
        loop, svc = self._service()
        coro: Coroutine[Any, Any, Any] = _with_timeout(make(svc), timeout)
        future = loop.submit(coro)
        try:
            return future.result(timeout + 1.0)
        except ServerError as exc:
            raise _map_server_error(exc) from None
        except (
            TimeoutError,
            aiohttp.ClientError,
            concurrent.futures.TimeoutError,
            OSError,
            DecodeError,  # a 200 that is not a protobuf answer: something else listens at LIVEKIT_URL
        ) as exc:
            future.cancel()
            log.warning("LiveKit unreachable: %s", type(exc).__name__)
            raise LiveKitUnavailable("LiveKit is unreachable") from None


async def _with_timeout(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    return await asyncio.wait_for(coro, timeout_s)


def _map_server_error(exc: ServerError) -> LiveKitError:
    # Only LiveKit's own Twirp code means "no such room": a bare 404 (wrong URL, a proxy) does not.
    if exc.code == "not_found":
        return RoomNotFound("room not found")
    if exc.status >= 500 or exc.code in ("unavailable", "deadline_exceeded", "resource_exhausted"):
        log.warning("LiveKit error %s (%s)", exc.status, exc.code)
        return LiveKitUnavailable("LiveKit is unavailable")
    log.error("LiveKit rejected a RoomService call: %s (%s)", exc.status, exc.code)
    return LiveKitRejected(f"LiveKit rejected the call ({exc.code})")
