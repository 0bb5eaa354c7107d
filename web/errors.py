"""Every error leaves as JSON ``{"error": {"code", "message"}}`` with the status that fits, and the
input checks that produce the 400s.

Handlers cover our own ``ApiError``, LiveKit/Kafka failures, every werkzeug HTTP error (404 route,
405, 413 body too large, ...) and, last, anything unexpected: a 500 that logs the traceback but says
nothing about it to the client.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from connectors.livekit_rooms import LiveKitRejected, LiveKitUnavailable, RoomNotFound
from connectors.room_events import PublishError

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    return resp


# werkzeug's names are long sentences; codes are short snake_case identifiers the frontend can match.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        resp = error_response(exc.status, exc.code, exc.message)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="quantcoach"'
        return resp

    @app.errorhandler(RoomNotFound)
    def _not_found(exc: RoomNotFound) -> Response:
        return error_response(404, "room_not_found", "room not found")

    @app.errorhandler(LiveKitUnavailable)
    def _unavailable(exc: LiveKitUnavailable) -> Response:
        return error_response(503, "livekit_unavailable", "LiveKit is unreachable; try again later")

    @app.errorhandler(LiveKitRejected)
    def _rejected(exc: LiveKitRejected) -> Response:
        # LiveKit said no to a call we validated: our credentials or configuration are wrong.
        return error_response(502, "livekit_rejected", "LiveKit rejected the request")

    @app.errorhandler(PublishError)
    def _publish(exc: PublishError) -> Response:
        return error_response(503, "kafka_unavailable", "the event could not be published; retry later")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        if status == 413:
            message = "request body too large"
        else:
            message = (exc.description or exc.name or "").split("\n")[0]
        resp = error_response(status, code, message)
        if status == 405 and getattr(exc, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal server error")


# --- input checks: each failure is a 400 naming the field -------------------------------------------
#: Room names end up in URLs, Kafka keys, window ids (``<room>:<seq>``) and file names: no '/', ':'.
ROOM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: ``/rooms/create`` is a route, so no room may be called ``create``.
RESERVED_ROOM_NAMES = frozenset({"create"})
#: Identities end up in participant keys and recording file names (``<role>-<identity>.wav``).
IDENTITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
NAME_MAX = 128


def json_object(*, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` when ``optional``."""
    raw = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH (413 beyond it)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "invalid_body", "a JSON object body is required")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return body


def room_name(value: Any, field: str = "room_name") -> str:
    if not isinstance(value, str) or not ROOM_NAME_RE.fullmatch(value):
        raise ApiError(
            400, "invalid_room_name", f"{field}: 1-64 characters of A-Z a-z 0-9 _ . -, starting alphanumeric"
        )
    if value in RESERVED_ROOM_NAMES:
        raise ApiError(400, "invalid_room_name", f"{field}: {value!r} is reserved")
    return value


def identity(value: Any, field: str = "participant_identity") -> str:
    if not isinstance(value, str) or not IDENTITY_RE.fullmatch(value):
        raise ApiError(
            400,
            "invalid_identity",
            f"{field}: 1-128 characters of A-Z a-z 0-9 _ . @ + -, starting alphanumeric",
        )
    return value


def display_name(value: Any, field: str = "participant_name") -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > NAME_MAX or _CONTROL_RE.search(value):
        raise ApiError(400, "invalid_name", f"{field}: a string of at most {NAME_MAX} printable characters")
    return value


def integer(body: dict[str, Any], field: str, default: int, lo: int, hi: int) -> int:
    if field not in body:  # absent takes the default; an explicit null is invalid, as in the original
        return default
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"invalid_{field}", f"{field}: an integer from {lo} to {hi}")
    return value


def choice(body: dict[str, Any], field: str, default: str, allowed: tuple[str, ...]) -> str:
    if field not in body:
        return default
    value = body[field]
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(400, f"invalid_{field}", f"{field}: one of {', '.join(allowed)}")
    return value
