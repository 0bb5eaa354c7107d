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
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from livekit.protocol.models import ParticipantInfo, Room
from werkzeug.routing import BaseConverter

from web import errors
from web.app import services
from web.errors import ApiError

log = logging.getLogger(__name__)

bp = Blueprint("rooms", __name__)

MAX_PARTICIPANTS_LIMIT = 1000
EMPTY_TIMEOUT_LIMIT = 86400  # one day; 0 = LiveKit's default


class RoomConverter(BaseConverter):
    """A path segment naming a room, never the literal ``create``: ``/rooms/create`` is its own route,
    so the ``/rooms/<name>`` rules must not also claim it (DELETE /rooms/create would be ambiguous)."""

    regex = r"(?!create$)[^/]+"


def _generated_name() -> str:
    # Time for humans, random suffix so that two creates in the same second do not collide.
    return f"interview-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def room_json(room: Room) -> dict[str, Any]:
    # Explicit fields only: a Room also carries turn_password, which must never reach a client.
    return {
        "sid": room.sid,
        "name": room.name,
        "num_participants": room.num_participants,
        "creation_time": int(room.creation_time),
    }


def participant_json(p: ParticipantInfo) -> dict[str, Any]:
    return {
        "sid": p.sid,
        "identity": p.identity,
        "name": p.name,
        "state": ParticipantInfo.State.Name(p.state),
        "role": p.attributes.get("role", ""),
    }


@bp.post("/rooms/create")
def create_room() -> ResponseReturnValue:
    body = errors.json_object(optional=True)
    name = body.get("room_name")
    name = _generated_name() if name is None else errors.room_name(name)
    max_participants = errors.integer(body, "max_participants", 10, 1, MAX_PARTICIPANTS_LIMIT)
    empty_timeout = errors.integer(body, "empty_timeout", 0, 0, EMPTY_TIMEOUT_LIMIT)

    svc = services()
    rooms, minter = svc.need_rooms(), svc.need_minter()
    if rooms.get_room(name) is not None:
        raise ApiError(409, "room_exists", f"room {name!r} already exists")
    room = rooms.create_room(name, max_participants, empty_timeout)
    suffix = secrets.token_hex(4)
    log.info("room created: %s (%s)", room.name, room.sid)
    mint = functools.partial(minter.mint, room.name)
    return jsonify(
        {
            "sid": room.sid,
            "name": room.name,
            "max_participants": room.max_participants,
            "creation_time": int(room.creation_time),
            "interviewer_token": mint(f"interviewer-{suffix}", "interviewer", "Interviewer"),
            "candidate_token": mint(f"candidate-{suffix}", "candidate", "Candidate"),
            "agent_token": mint(svc.settings.agent_identity, "agent", "QuantCoach Agent"),
            "url": svc.settings.livekit_url,
        }
    )


@bp.get("/rooms")
def list_rooms() -> ResponseReturnValue:
    rooms = services().need_rooms().list_rooms()
    return jsonify([room_json(r) for r in rooms])


def _existing_room(name: str) -> tuple[str, Any]:
    """The validated name and the RoomService client; 404 when LiveKit has no such room."""
    name = errors.room_name(name, "room name")
    rooms = services().need_rooms()
    if rooms.get_room(name) is None:
        raise ApiError(404, "room_not_found", f"room {name!r} not found")
    return name, rooms


@bp.get("/rooms/<room:name>/participants")
def list_participants(name: str) -> ResponseReturnValue:
    name, rooms = _existing_room(name)
    return jsonify([participant_json(p) for p in rooms.list_participants(name)])


@bp.delete("/rooms/<room:name>")
def delete_room(name: str) -> ResponseReturnValue:
    name, rooms = _existing_room(name)
    rooms.delete_room(name)
    log.info("room deleted: %s", name)
    return jsonify({"status": "success", "message": f"Room {name} deleted"})
