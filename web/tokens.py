"""``POST /tokens/generate``: a participant token for an existing or future room.

Minting is local (HS256 with the LiveKit API secret), so this route needs LiveKit configured but never
calls it. Grants follow the role (``connectors.livekit_rooms.grants_for``); ``role`` defaults to
``participant``, the least privileged, as in the original backend.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from connectors.livekit_rooms import ROLES
from web import errors
from web.app import services

bp = Blueprint("tokens", __name__)


@bp.post("/tokens/generate")
def generate_token() -> ResponseReturnValue:
    body = errors.json_object()
    room = errors.room_name(body.get("room_name"))
    identity = errors.identity(body.get("participant_identity"))
    name = errors.display_name(body.get("participant_name"))
    role = errors.choice(body, "role", "participant", ROLES)

    svc = services()
    token = svc.need_minter().mint(room, identity, role, name)
    return jsonify(
        {"token": token, "room_name": room, "participant_identity": identity, "url": svc.settings.livekit_url}
    )
