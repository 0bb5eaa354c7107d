"""``POST /tokens/generate``: a participant token for an existing or future room.

Minting is local (HS256 with the LiveKit API secret), so this route needs LiveKit configured but never
calls it. Grants follow the role (``connectors.livekit.api.grants_for``); ``role`` defaults to
``participant``, the least privileged, as in the original backend.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field

from web import validation
from web.errors import ApiError
from web.openapi import AUTH_ERRORS, operation
from web.services import services
from web.validation import DisplayName, Identity, Role, RoomName

bp = Blueprint("tokens", __name__)


class TokenRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    room_name: RoomName
    participant_identity: Identity
    participant_name: DisplayName | None = None
    role: Role = "participant"


class TokenResponse(BaseModel):
    token: str = Field(description="LiveKit access token (JWT)")
    room_name: str
    participant_identity: str
    url: str


@bp.post("/tokens/generate")
@operation(
    "generateToken",
    "A participant token with the grants of its role",
    ok=("token issued", TokenResponse),
    body=TokenRequest,
    errors=(400, *AUTH_ERRORS, 413, 415, 503),
)
def generate_token() -> ResponseReturnValue:
    req = validation.body(TokenRequest)
    svc = services()
    if req.participant_identity == svc.settings.agent_identity:
        # the flow's own identity: a token for it could publish into rooms as the hidden agent
        raise ApiError(400, "reserved_identity", "participant_identity is reserved for the QuantCoach agent")
    token = svc.need_minter().mint(
        req.room_name, req.participant_identity, req.role, req.participant_name or ""
    )
    issued = TokenResponse(
        token=token,
        room_name=req.room_name,
        participant_identity=req.participant_identity,
        url=svc.settings.livekit_url,
    )
    return jsonify(issued.model_dump())
