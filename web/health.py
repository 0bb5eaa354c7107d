"""``GET /`` and ``GET /health``: public, cheap, and honest about LiveKit and Kafka.

Both answer 200 while the process serves requests (a load balancer should not kill a worker because
LiveKit is down); ``status`` is ``degraded`` when LiveKit is unconfigured or unreachable. Reachability
is an authenticated ListRooms with a 2 s deadline, cached a few seconds per process so that frequent
health checks do not turn into a stream of calls to LiveKit.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import time
import tomllib
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from web.app import Services, services

bp = Blueprint("health", __name__)

SERVICE = "QuantCoach API"
PROBE_TTL_S = 5.0


@functools.cache
def version() -> str:
    try:
        return importlib.metadata.version("quantcoach")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout, not installed
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


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


def _payload() -> dict[str, Any]:
    svc = services()
    reachable = livekit_reachable(svc)
    return {
        "status": "ok" if reachable else "degraded",
        "service": SERVICE,
        "version": version(),
        "livekit_configured": svc.settings.livekit_configured,
        "livekit_reachable": reachable,
        "kafka_configured": svc.settings.kafka_configured,
    }


@bp.get("/")
def root() -> ResponseReturnValue:
    return jsonify(_payload())


@bp.get("/health")
def health() -> ResponseReturnValue:
    return jsonify(_payload())
