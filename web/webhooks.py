"""``POST /livekit/webhook``: LiveKit's signed webhooks, passed on to the flow.

LiveKit signs each webhook with a JWT (our API key and secret) whose ``sha256`` claim is the body's
hash; livekit-api's ``WebhookReceiver`` checks both. ``room_started`` and ``room_finished`` go to the
rooms control topic (keyed by room) so the live flow can join rooms as they start; other events are
acknowledged and dropped. A publish failure answers 503 so that LiveKit delivers the event again.
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from connectors.kafka.room_events import RoomEvent
from connectors.livekit.api import WebhookMalformed, WebhookRejected
from web.errors import ApiError
from web.openapi import operation
from web.services import services

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)


class WebhookAck(BaseModel):
    status: str
    event: str
    forwarded: bool


#: The body is LiveKit's (protobuf JSON), checked by its signature and parsed by livekit-api.
_LIVEKIT_EVENT = {"type": "object"}


@bp.post("/livekit/webhook")
@operation(
    "livekitWebhook",
    "LiveKit webhook receiver (signed by LiveKit, no API key)",
    ok=("event accepted", WebhookAck),
    body={"application/webhook+json": _LIVEKIT_EVENT, "application/json": _LIVEKIT_EVENT},
    errors=(400, 401, 413, 503),
    public=True,
)
def livekit_webhook() -> ResponseReturnValue:
    svc = services()
    if svc.webhooks is None:
        raise ApiError(503, "livekit_not_configured", "LiveKit API key and secret are not configured")
    body = request.get_data(cache=True)  # the exact bytes: the signature covers their hash
    try:
        event = svc.webhooks.verify(body, request.headers.get("Authorization", ""))
    except WebhookRejected:
        raise ApiError(401, "invalid_signature", "webhook signature does not verify") from None
    except WebhookMalformed:
        raise ApiError(400, "invalid_webhook", "webhook body is not a LiveKit event") from None

    room_event = RoomEvent.from_webhook(event)
    forwarded = False
    if room_event is not None and svc.settings.webhook_forward:
        if svc.publisher is None:
            log.info("%s for %s not forwarded: Kafka is not configured", room_event.event, room_event.room)
        else:
            svc.publisher.publish(room_event)
            forwarded = True
            log.info("%s for %s forwarded", room_event.event, room_event.room)
    return jsonify(WebhookAck(status="ok", event=event.event, forwarded=forwarded).model_dump())
