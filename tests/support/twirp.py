"""A protocol-faithful local LiveKit RoomService (Twirp) for tests, on 127.0.0.1.

What it checks, as livekit-server does:
- ``POST /twirp/livekit.RoomService/<Method>``; other paths are Twirp ``bad_route`` (404).
- ``Authorization: Bearer <JWT>`` signed HS256 with the API secret and issued by the API key
  (verified with livekit-api's ``TokenVerifier``): missing or bad -> ``unauthenticated`` (401).
- the video grant each method needs: CreateRoom/DeleteRoom ``roomCreate``, ListRooms ``roomList``,
  ListParticipants ``roomAdmin`` for that very room -> else ``permission_denied`` (403).
- bodies in either Twirp encoding: ``application/protobuf`` (what livekit-api sends) or
  ``application/json`` (protobuf JSON via ``google.protobuf.json_format``); the answer uses the
  request's encoding; errors are always Twirp JSON ``{"code", "msg"}``.

State is a dict of rooms and their participants; tests add participants with ``add_participant``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api import TokenVerifier
from livekit.api.access_token import Claims
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
)

from quantcoach.settings import Secret, Settings

API_KEY = "APItestkey"
API_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
TEST_API_KEY = "test-api-key-0123456789"

_STATUS = {
    "bad_route": 404,
    "malformed": 400,
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "internal": 500,
    "unavailable": 503,
}


class TwirpError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class Call:
    method: str
    claims: Claims | None
    content_type: str
    status: int


@dataclass
class RoomServiceState:
    rooms: dict[str, Room] = field(default_factory=dict)
    participants: dict[str, list[ParticipantInfo]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    #: ``method -> Twirp code`` to answer once with that error (fault injection).
    fail_next: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _sids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def sid(self, prefix: str) -> str:
        return f"{prefix}_{next(self._sids):08d}"


_MethodImpl = Callable[[RoomServiceState, Any], Message]


def _create_room(st: RoomServiceState, req: CreateRoomRequest) -> Room:
    if not req.name:
        raise TwirpError("invalid_argument", "room name is required")
    existing = st.rooms.get(req.name)
    if existing is not None:  # livekit-server: CreateRoom of an existing room returns it
        return existing
    now = time.time()
    room = Room(
        sid=st.sid("RM"),
        name=req.name,
        empty_timeout=req.empty_timeout or 300,
        max_participants=req.max_participants,
        creation_time=int(now),
        creation_time_ms=int(now * 1000),
        turn_password="turn-secret-never-to-be-shown",
        metadata=req.metadata,
    )
    st.rooms[req.name] = room
    st.participants[req.name] = []
    return room


def _list_rooms(st: RoomServiceState, req: ListRoomsRequest) -> ListRoomsResponse:
    names = set(req.names)
    rooms = [r for n, r in st.rooms.items() if not names or n in names]
    for r in rooms:
        r.num_participants = len(st.participants.get(r.name, []))
    return ListRoomsResponse(rooms=rooms)


def _delete_room(st: RoomServiceState, req: DeleteRoomRequest) -> DeleteRoomResponse:
    if req.room not in st.rooms:
        raise TwirpError("not_found", "requested room does not exist")
    del st.rooms[req.room]
    st.participants.pop(req.room, None)
    return DeleteRoomResponse()


def _list_participants(st: RoomServiceState, req: ListParticipantsRequest) -> ListParticipantsResponse:
    if req.room not in st.rooms:
        raise TwirpError("not_found", "requested room does not exist")
    return ListParticipantsResponse(participants=st.participants[req.room])


def _grant_create(c: Claims, req: Any) -> bool:
    return bool(c.video and c.video.room_create)


def _grant_list(c: Claims, req: Any) -> bool:
    return bool(c.video and c.video.room_list)


def _grant_admin(c: Claims, req: Any) -> bool:
    return bool(c.video and c.video.room_admin and c.video.room == req.room)


# method -> (request class, implementation, grant check)
_METHODS: dict[str, tuple[type[Message], _MethodImpl, Callable[[Claims, Any], bool]]] = {
    "CreateRoom": (CreateRoomRequest, _create_room, _grant_create),
    "ListRooms": (ListRoomsRequest, _list_rooms, _grant_list),
    "DeleteRoom": (DeleteRoomRequest, _delete_room, _grant_create),
    "ListParticipants": (ListParticipantsRequest, _list_participants, _grant_admin),
}
_PREFIX = "/twirp/livekit.RoomService/"


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp expects from a real server
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet in test output
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        method = self.path[len(_PREFIX) :] if self.path.startswith(_PREFIX) else ""
        claims: Claims | None = None
        st = self.server.state
        try:
            if method not in _METHODS:
                raise TwirpError("bad_route", f"no handler for path {self.path}")
            if ctype not in ("application/protobuf", "application/json"):
                raise TwirpError("bad_route", f"unexpected Content-Type: {ctype!r}")
            claims = self._claims()
            req_cls, handler, allowed = _METHODS[method]
            req = self._decode(req_cls, body, ctype)
            if not allowed(claims, req):
                raise TwirpError("permission_denied", "permissions denied")
            with st.lock:
                fault = st.fail_next.pop(method, None)
                if fault is not None:
                    raise TwirpError(fault, "injected failure")
                resp = handler(st, req)
                payload = (
                    resp.SerializeToString()
                    if ctype == "application/protobuf"
                    else json_format.MessageToJson(resp).encode()
                )
            st.calls.append(Call(method, claims, ctype, 200))  # before answering: tests read it next
            self._send(200, ctype, payload)
        except TwirpError as exc:
            status = _STATUS.get(exc.code, 500)
            st.calls.append(Call(method, claims, ctype, status))
            self._send(status, "application/json", json.dumps({"code": exc.code, "msg": exc.msg}).encode())

    def do_GET(self) -> None:
        self._send(404, "application/json", b'{"code":"bad_route","msg":"GET not supported"}')

    def _claims(self) -> Claims:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise TwirpError("unauthenticated", "no authorization header")
        try:
            return TokenVerifier(self.server.api_key, self.server.api_secret).verify(auth[len("Bearer ") :])
        except Exception:
            raise TwirpError("unauthenticated", "invalid token") from None

    @staticmethod
    def _decode(cls: type[Message], body: bytes, ctype: str) -> Any:
        try:
            if ctype == "application/protobuf":
                return cls.FromString(body)
            return json_format.Parse(body or b"{}", cls(), ignore_unknown_fields=True)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError):
            raise TwirpError("malformed", "the request body could not be decoded") from None

    def _send(self, status: int, ctype: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api_key: str, api_secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.state = RoomServiceState()
        self.api_key = api_key
        self.api_secret = api_secret


class TwirpRoomServer:
    """``with TwirpRoomServer() as srv:`` serves on ``srv.url`` (http://127.0.0.1:PORT)."""

    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self._server = _Server(api_key, api_secret)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="twirp", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def state(self) -> RoomServiceState:
        return self._server.state

    def settings(self, **overrides: Any) -> Settings:
        """App settings pointing at this server, with one API key ``test-api-key``."""
        values: dict[str, Any] = {
            "livekit_url": self.url,
            "livekit_api_key": Secret(self._server.api_key),
            "livekit_api_secret": Secret(self._server.api_secret),
            "api_keys": Secret(TEST_API_KEY),
        }
        values.update(overrides)
        return Settings(**values)

    def add_participant(self, room: str, identity: str, name: str = "", role: str = "") -> ParticipantInfo:
        st = self.state
        with st.lock:
            p = ParticipantInfo(
                sid=st.sid("PA"),
                identity=identity,
                name=name or identity,
                state=ParticipantInfo.State.ACTIVE,
                joined_at=int(time.time()),
                attributes={"role": role} if role else {},
            )
            st.participants[room].append(p)
            return p

    def start(self) -> TwirpRoomServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TwirpRoomServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
