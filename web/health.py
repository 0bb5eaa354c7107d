"""``GET /`` and ``GET /health``: public, cheap, and honest about LiveKit and Kafka.

Both answer 200 while the process serves requests (a load balancer should not kill a worker because
LiveKit is down); ``status`` is ``degraded`` when LiveKit is unconfigured or unreachable. Reachability
is an authenticated ListRooms with a 2 s deadline, cached a few seconds per process so that frequent
health checks do not turn into a stream of calls to LiveKit.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from web.openapi import operation, version
from web.services import Services, services

bp = Blueprint("health", __name__)

SERVICE = "QuantCoach API"
PROBE_TTL_S = 5.0


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    livekit_configured: bool
    livekit_reachable: bool
    kafka_configured: bool


def livekit_reachable(svc: Services) -> bool:
    """False when LiveKit is not configured; else a (briefly cached) probe result."""
    if svc.rooms is None:
        return False
    at, ok = svc.probe
    if time.monotonic() - at < PROBE_TTL_S:
        return ok
    # One probe at a time per process: concurrent health checks take the last answer meanwhile
    # (the very first one waits, there is no answer yet).
    if not svc.probe_lock.acquire(blocking=at == -math.inf):
        return ok
    try:
        at, ok = svc.probe
        if time.monotonic() - at >= PROBE_TTL_S:
            ok = svc.rooms.ping()
            svc.probe = (time.monotonic(), ok)
        return ok
    finally:
        svc.probe_lock.release()


def _payload() -> Health:
    svc = services()
    reachable = livekit_reachable(svc)
    return Health(
        status="ok" if reachable else "degraded",
        service=SERVICE,
        version=version(),
        livekit_configured=svc.settings.livekit_configured,
        livekit_reachable=reachable,
        kafka_configured=svc.settings.kafka_configured,
    )


@bp.get("/")
@operation("root", "Service status", ok=("service status", Health), public=True)
def root() -> ResponseReturnValue:
    return jsonify(_payload().model_dump())


@bp.get("/health")
@operation("health", "Service status", ok=("service status", Health), public=True)
def health() -> ResponseReturnValue:
    return jsonify(_payload().model_dump())
