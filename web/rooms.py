"""Rooms: create (with the three role tokens), list, list participants, delete.

Response shapes are the original backend's. LiveKit's CreateRoom is idempotent (it returns the room
that already exists), so a named create checks first and answers 409 rather than handing out tokens
for somebody else's room. Participants and delete check that the room exists, so an unknown room is a
404 whatever the server version does for it.
"""

from __future__ import annotations

import functools
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from livekit.protocol import models as lk
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.routing import BaseConverter

from connectors.livekit.api import RoomsClient
from web import validation
from web.errors import ApiError
from web.openapi import AUTH_ERRORS, LIVEKIT_ERRORS, operation
from web.services import services
from web.validation import Invalid, RoomName, json_int

log = logging.getLogger(__name__)

bp = Blueprint("rooms", __name__)

MAX_PARTICIPANTS_LIMIT = 1000
EMPTY_TIMEOUT_LIMIT = 86400  # one day; 0 = LiveKit's default
PARTICIPANT_STATES = tuple(lk.ParticipantInfo.State.keys())  # JOINING, JOINED, ACTIVE, DISCONNECTED


class RoomConverter(BaseConverter):
    """A path segment naming a room, never the literal ``create``: ``/rooms/create`` is its own route,
    so the ``/rooms/<name>`` rules must not also claim it (DELETE /rooms/create would be ambiguous)."""

    regex = r"(?!create$)[^/]+"


class CreateRoomRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    room_name: RoomName | None = Field(None, description="generated when absent or null")
    max_participants: Annotated[
        json_int(ge=1, le=MAX_PARTICIPANTS_LIMIT),
        Invalid("invalid_max_participants", f"an integer from 1 to {MAX_PARTICIPANTS_LIMIT}"),
    ] = 10
    empty_timeout: Annotated[
        json_int(ge=0, le=EMPTY_TIMEOUT_LIMIT),
        Field(description="seconds an empty room stays open; 0 = LiveKit's default"),
        Invalid("invalid_empty_timeout", f"an integer from 0 to {EMPTY_TIMEOUT_LIMIT}"),
    ] = 0


class CreateRoomResponse(BaseModel):
    sid: str
    name: str
    max_participants: int
    creation_time: int = Field(description="unix seconds")
    interviewer_token: str
    candidate_token: str
    agent_token: str
    url: str


class RoomInfo(BaseModel):
    sid: str
    name: str
    num_participants: int
    creation_time: int


class ParticipantInfo(BaseModel):
    sid: str
    identity: str
    name: str
    state: Literal[PARTICIPANT_STATES]
    role: str = Field(description="the participant's `role` attribute")


class DeleteRoomResponse(BaseModel):
    status: str
    message: str


def _generated_name() -> str:
    # Time for humans, random suffix so that two creates in the same second do not collide.
    return f"interview-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def room_json(room: lk.Room) -> dict[str, Any]:
    # Explicit fields only: a Room also carries turn_password, which must never reach a client.
    info = RoomInfo(
        sid=room.sid,
        name=room.name,
        num_participants=room.num_participants,
        creation_time=int(room.creation_time),
    )
    return info.model_dump()


def participant_json(p: lk.ParticipantInfo) -> dict[str, Any]:
    return ParticipantInfo(
        sid=p.sid,
        identity=p.identity,
        name=p.name,
        state=lk.ParticipantInfo.State.Name(p.state),
        role=p.attributes.get("role", ""),
    ).model_dump()


@bp.post("/rooms/create")
@operation(
    "createRoom",
    "Create a room and tokens for interviewer, candidate and agent",
    ok=("room created", CreateRoomResponse),
    body=CreateRoomRequest,
    body_required=False,
    errors=(400, *AUTH_ERRORS, 409, 413, 415, *LIVEKIT_ERRORS),
)
def create_room() -> ResponseReturnValue:
    req = validation.body(CreateRoomRequest, optional=True)
    name = req.room_name or _generated_name()

    svc = services()
    rooms, minter = svc.need_rooms(), svc.need_minter()
    if rooms.get_room(name) is not None:
        raise ApiError(409, "room_exists", f"room {name!r} already exists")
    room = rooms.create_room(name, req.max_participants, req.empty_timeout)
    suffix = secrets.token_hex(4)
    log.info("room created: %s (%s)", room.name, room.sid)
    mint = functools.partial(minter.mint, room.name)
    created = CreateRoomResponse(
        sid=room.sid,
        name=room.name,
        max_participants=room.max_participants,
        creation_time=int(room.creation_time),
        interviewer_token=mint(f"interviewer-{suffix}", "interviewer", "Interviewer"),
        candidate_token=mint(f"candidate-{suffix}", "candidate", "Candidate"),
        agent_token=mint(svc.settings.agent_identity, "agent", "QuantCoach Agent"),
        url=svc.settings.livekit_url,
    )
    return jsonify(created.model_dump())


@bp.get("/rooms")
@operation(
    "listRooms", "Active rooms", ok=("active rooms", list[RoomInfo]), errors=(*AUTH_ERRORS, *LIVEKIT_ERRORS)
)
def list_rooms() -> ResponseReturnValue:
    rooms = services().need_rooms().list_rooms()
    return jsonify([room_json(r) for r in rooms])


def _existing_room(name: str) -> tuple[str, RoomsClient]:
    """The validated name and the RoomService client; 404 when LiveKit has no such room."""
    name = validation.room_name(name)
    rooms = services().need_rooms()
    if rooms.get_room(name) is None:
        raise ApiError(404, "room_not_found", f"room {name!r} not found")
    return name, rooms


@bp.get("/rooms/<room:name>/participants")
@operation(
    "listParticipants",
    "Participants of a room",
    ok=("participants", list[ParticipantInfo]),
    errors=(400, *AUTH_ERRORS, 404, *LIVEKIT_ERRORS),
)
def list_participants(name: str) -> ResponseReturnValue:
    name, rooms = _existing_room(name)
    return jsonify([participant_json(p) for p in rooms.list_participants(name)])


@bp.delete("/rooms/<room:name>")
@operation(
    "deleteRoom",
    "Delete a room and disconnect everyone in it",
    ok=("room deleted", DeleteRoomResponse),
    errors=(400, *AUTH_ERRORS, 404, 405, *LIVEKIT_ERRORS),
)
def delete_room(name: str) -> ResponseReturnValue:
    name, rooms = _existing_room(name)
    rooms.delete_room(name)
    log.info("room deleted: %s", name)
    return jsonify(DeleteRoomResponse(status="success", message=f"Room {name} deleted").model_dump())
