"""Sessions: each interview, whatever its room's name, and what the store holds of it.

``GET /rooms/<name>/sessions``          the room's sessions, newest (last seen by the store) first
``GET /sessions/<id>/transcript``       final transcripts in media-time order (JSON; ``?format=text``,
                                        ``vtt`` or ``srt``), as ``/rooms/<name>/transcript``
``GET /sessions/<id>/windows``          evaluation windows in order
``GET /sessions/<id>/events``           SSE, as ``/rooms/<name>/events``: transcript, window, session and
                                        metrics events; also takes the report page's ``?token=``
``GET /sessions/<id>/metrics``          the latest metrics record (404 while there is none)

An unknown session is a 404 ``session_not_found``; an id that cannot be a session id (not
``[A-Za-z0-9_-]{1,64}``) a 400 ``invalid_session_id``.
"""

from __future__ import annotations

import re

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from werkzeug.routing import BaseConverter

from connectors.store import SessionInfo, Store
from quantcoach.wire import SESSION_ID_PATTERN, MetricsRecord, TranscriptRecord, WindowRecord
from web import transcripts, validation
from web.errors import ApiError
from web.openapi import STORE_ERRORS, operation
from web.services import services

bp = Blueprint("sessions", __name__)

_SESSION_ID = re.compile(SESSION_ID_PATTERN)


class SessionConverter(BaseConverter):
    """A path segment naming a session (checked in the view, so a bad one is a JSON 400)."""

    regex = r"[^/]+"


class SessionSummary(BaseModel):
    """One session of a room, as the store holds it."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    started_at: str | None = Field(description="wall-clock start (ISO 8601), null when unknown")
    ended_at: str | None = Field(description="the `ended` record's time; null while the session runs")
    transcripts: int = Field(ge=0, description="final transcripts stored")
    windows: int = Field(ge=0, description="windows stored")


class RoomSessions(BaseModel):
    """A room's sessions, newest first (the order the store first saw them in, reversed)."""

    room: str
    sessions: list[SessionSummary]


def session_id(value: str) -> str:
    """A session id from a path segment; 400 ``invalid_session_id`` when it cannot be one."""
    if not _SESSION_ID.fullmatch(value):
        raise ApiError(400, "invalid_session_id", "session id: 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def need_session(value: str) -> tuple[Store, SessionInfo]:
    """The store and the session named by ``value``; 400, 404 ``session_not_found`` (or 503)."""
    sid = session_id(value)
    store = services().need_store().get()
    info = store.session(sid) if store is not None else None
    if store is None or info is None:
        raise ApiError(404, "session_not_found", f"no session {sid!r} is stored")
    return store, info


def _summary(s: SessionInfo) -> dict[str, object]:
    return SessionSummary(
        session_id=s.session_id,
        started_at=s.started_at,
        ended_at=s.ended_at,
        transcripts=s.transcripts,
        windows=s.windows,
    ).model_dump()


@bp.get("/rooms/<room:name>/sessions")
@operation(
    "listRoomSessions",
    "The room's sessions, newest first",
    description="A room name is reused; each interview held under it is a session. Newest is the one "
    "the store saw last; the room's `transcript`, `windows` and `events` answer for it.",
    ok=("the sessions", RoomSessions),
    errors=STORE_ERRORS,
)
def room_sessions(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    store = services().need_store().get()
    found = store.sessions(name) if store is not None else []
    if not found:
        raise ApiError(404, "room_not_found", f"nothing stored for room {name!r}")
    return jsonify({"room": name, "sessions": [_summary(s) for s in found]})


@bp.get("/sessions/<session:session_id>/transcript")
@operation(
    "getSessionTranscript",
    "The session's final transcripts in media-time order",
    ok=(
        "transcripts (JSON records; text lines with `format=text`; subtitles with `vtt` or `srt`)",
        {
            "application/json": list[TranscriptRecord],
            "text/plain": {"type": "string"},
            "text/vtt": {"type": "string"},
            "application/x-subrip": {"type": "string"},
        },
    ),
    query=transcripts.TranscriptQuery,
    errors=STORE_ERRORS,
)
def session_transcript(session_id: str) -> ResponseReturnValue:
    q = validation.query(transcripts.TranscriptQuery)
    store, info = need_session(session_id)
    return transcripts.transcript_response(store, info.session_id, q)


@bp.get("/sessions/<session:session_id>/windows")
@operation(
    "getSessionWindows",
    "The session's evaluation windows in order",
    ok=("windows", list[WindowRecord]),
    errors=STORE_ERRORS,
)
def session_windows(session_id: str) -> ResponseReturnValue:
    store, info = need_session(session_id)
    return jsonify(store.windows(info.session_id))


@bp.get("/sessions/<session:session_id>/events")
@operation(
    "sessionEvents",
    "Server-Sent Events: the session's stored records, then new ones as they land",
    description=transcripts.EVENTS_DESCRIPTION + " Besides the API key, this route takes the `token` "
    "query parameter that the session's report page embeds (an EventSource cannot send headers).",
    ok=transcripts.EVENTS_OK,
    query=transcripts.EventsQuery,
    headers=(transcripts.LAST_EVENT_ID,),
    errors=STORE_ERRORS,
    security=("apiKey", "eventsToken"),
)
def session_events(session_id: str) -> ResponseReturnValue:
    after, max_s = transcripts.events_request()
    store, info = need_session(session_id)
    return transcripts.events_response(store, info.session_id, after, max_s)


@bp.get("/sessions/<session:session_id>/metrics")
@operation(
    "getSessionMetrics",
    "The session's latest metrics (final once the session ended)",
    ok=("the latest metrics record", MetricsRecord),
    errors=STORE_ERRORS,
)
def session_metrics(session_id: str) -> ResponseReturnValue:
    store, info = need_session(session_id)
    record = store.metrics(info.session_id)
    if record is None:
        raise ApiError(404, "metrics_not_found", f"no metrics stored for session {info.session_id!r} yet")
    return jsonify(record)
