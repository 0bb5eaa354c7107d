"""Every error leaves as JSON ``{"error": {"code", "message"}}`` with the status that fits.

One table, ``FAILURES``, says what each failure of an outside thing becomes (LiveKit, Kafka, the
transcript store); handlers besides it cover our own ``ApiError``, every werkzeug HTTP error (404 route,
405, 413 body too large, ...) and, last, anything unexpected: a 500 that logs the traceback but says
nothing about it to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, jsonify
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from connectors.kafka.room_events import PublishError
from connectors.livekit.api import LiveKitRejected, LiveKitUnavailable, RoomNotFound

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ErrorInfo(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


def error_response(status: int, code: str, message: str) -> Response:
    resp = jsonify(Error(error=ErrorInfo(code=code, message=message)).model_dump())
    resp.status_code = status
    return resp


#: A failure of an outside thing -> (status, code, message). Flask takes the entry of the closest class
#: in the exception's MRO.
FAILURES: dict[type[Exception], tuple[int, str, str]] = {
    RoomNotFound: (404, "room_not_found", "room not found"),
    LiveKitUnavailable: (503, "livekit_unavailable", "LiveKit is unreachable; try again later"),
    # LiveKit said no to a call we validated: our credentials or configuration are wrong.
    LiveKitRejected: (502, "livekit_rejected", "LiveKit rejected the request"),
    PublishError: (503, "kafka_unavailable", "the event could not be published; retry later"),
    # The store went away after it was opened (server restarted, file locked for too long).
    SQLAlchemyError: (503, "store_unavailable", "the transcript store is unavailable; try again later"),
}

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


def _failure(status: int, code: str, message: str) -> Callable[[Exception], Response]:
    def handle(exc: Exception) -> Response:
        if status >= 500:
            log.warning("%s: %s", code, type(exc).__name__)
        return error_response(status, code, message)

    return handle


def _api_error(exc: ApiError) -> Response:
    resp = error_response(exc.status, exc.code, exc.message)
    resp.headers.update(exc.headers)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="quantcoach"'
    return resp


def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    message = (
        "request body too large" if status == 413 else (exc.description or exc.name or "").split("\n")[0]
    )
    resp = error_response(status, code, message)
    if status == 405 and getattr(exc, "valid_methods", None):
        resp.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return resp


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    for exc_type, (status, code, message) in FAILURES.items():
        app.register_error_handler(exc_type, _failure(status, code, message))
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
