"""What the transcript store holds, served: read endpoints and a live Server-Sent Events stream.

``GET /rooms/<name>/transcript``  final transcripts in media-time order (JSON records, or ``?format=text``)
``GET /rooms/<name>/windows``     evaluation windows in order
``GET /rooms/<name>/events``      SSE: the stored records from the start (or after ``Last-Event-ID``),
                                  then new ones as they land; ``id`` is the store position

The store is written by another process (``quantcoach store``, ``replay --store``); this app only reads
it, through ``web.services.StoreAccess`` (opened on first use; 503 while the database is down).
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Annotated, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from connectors.store import Store, StoredEvent
from quantcoach.records import TranscriptRecord, WindowRecord, dumps
from web import validation
from web.errors import ApiError
from web.openapi import STORE_ERRORS, operation
from web.services import services
from web.validation import Invalid, query_number

log = logging.getLogger(__name__)

bp = Blueprint("transcripts", __name__)

#: App config keys of the event stream (create_app sets these defaults; tests override them).
SSE_DEFAULTS: dict[str, float] = {
    # How often a stream asks the store for new records (s). Polling, because the writer is another
    # process (the store job): there is no in-process signal to wait on, SQLite has no cross-process
    # notification at all, and one indexed (room, position) lookup per tick is cheap for either database.
    "SSE_POLL_S": 0.25,
    # A comment line after this long without a write (s): keeps proxies from closing an idle stream,
    # and is the write that finds a vanished client when its socket cannot be inspected.
    "SSE_KEEPALIVE_S": 15.0,
    # Longest life of one stream (s); the client then reconnects with Last-Event-ID. It bounds how
    # long a gunicorn thread is held by a client that vanished without a trace (no FIN, no RST).
    "SSE_MAX_S": 600.0,
    # ``retry:`` sent first: how long an EventSource waits before reconnecting (ms).
    "SSE_RETRY_MS": 2000,
}
EVENT_BATCH = 500  # records per store read; a longer backlog is read in further batches at once
EVENT_ID_PATTERN = "[0-9]{1,18}"  # a store position: fits a signed 64-bit integer
_EVENT_ID_RE = re.compile(EVENT_ID_PATTERN)
FORMATS = ("json", "text")


# --- input ------------------------------------------------------------------------------------------
class TranscriptQuery(BaseModel):
    # format first: of two bad parameters, the format is the one reported
    format: Annotated[
        Literal[FORMATS],
        Field(description="`text`: one `Interviewer: ...` line per transcript"),
        Invalid("invalid_format", f"one of {', '.join(FORMATS)}"),
    ] = "json"
    since: Annotated[
        query_number(ge=0) | None,
        Field(description="only transcripts starting at or after this media time (s)"),
        Invalid("invalid_since", "a finite number >= 0"),
    ] = None


class EventsQuery(BaseModel):
    max_s: Annotated[
        query_number(gt=0) | None,
        Field(description="end the stream after this many seconds (the server caps it)"),
        Invalid("invalid_max_s", "a finite number > 0"),
    ] = None


class RoomEvent(BaseModel):
    """One Server-Sent Event of `/rooms/{name}/events`"""

    event: Literal["transcript", "window"]
    data: str = Field(description="the record's JSON (`Transcript` or `Window`)")
    id: str = Field(pattern="^[0-9]+$", description="the store position")


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "description": "resume after this event id (EventSource sends it when it reconnects); absent or "
    "empty: from the room's first record",
    "schema": {"type": "string", "pattern": f"^(|{EVENT_ID_PATTERN})$"},
}


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0  # no id yet (an EventSource sends none before its first event): from the start
    if not _EVENT_ID_RE.fullmatch(raw):
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID: an event id (a non-negative integer)")
    return int(raw)


def _room_store(name: str) -> Store:
    """The store, once the room is known to have something stored in it; else 404 (or 503)."""
    store = services().need_store().get()
    if store is None or not store.room_exists(name):
        raise ApiError(404, "room_not_found", f"nothing stored for room {name!r}")
    return store


# --- reads --------------------------------------------------------------------------------------------
@bp.get("/rooms/<room:name>/transcript")
@operation(
    "getTranscript",
    "The room's final transcripts in media-time order",
    ok=(
        "transcripts (JSON records, or text lines with `format=text`)",
        {"application/json": list[TranscriptRecord], "text/plain": {"type": "string"}},
    ),
    query=TranscriptQuery,
    errors=STORE_ERRORS,
)
def transcript(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    q = validation.query(TranscriptQuery)
    store = _room_store(name)
    items = store.transcripts(name, q.since)
    if q.format == "text":
        body = "".join(f"{t['speaker'].capitalize()}: {t['text']}\n" for t in items)
        return Response(body, mimetype="text/plain")
    return jsonify(items)


@bp.get("/rooms/<room:name>/windows")
@operation(
    "getWindows",
    "The room's evaluation windows in order",
    ok=("windows", list[WindowRecord]),
    errors=STORE_ERRORS,
)
def windows(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    return jsonify(_room_store(name).windows(name))


# --- the event stream -----------------------------------------------------------------------------
@bp.get("/rooms/<room:name>/events")
@operation(
    "roomEvents",
    "Server-Sent Events: the room's stored records, then new ones as they land",
    description="Events `transcript` and `window`; `data` is the record's JSON on one line, `id` its store "
    "position (increasing). The stream starts with `retry: <ms>`, sends `: keep-alive` comments while idle "
    "and ends after a server-set lifetime (or `max_s`); reconnect with `Last-Event-ID` to get exactly the "
    "records after that id.",
    ok=("an event stream (the schema is one event's)", {"text/event-stream": RoomEvent}),
    query=EventsQuery,
    headers=(_LAST_EVENT_ID,),
    errors=STORE_ERRORS,
)
def events(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    after = _last_event_id()
    max_s = validation.query(EventsQuery).max_s
    cfg = current_app.config
    limit_s = float(cfg["SSE_MAX_S"]) if max_s is None else min(max_s, float(cfg["SSE_MAX_S"]))
    store = _room_store(name)
    # Everything the generator needs is taken now: it runs after the view has returned, outside the
    # request context, on the gunicorn thread that writes it out.
    stream = event_stream(
        store,
        name,
        after,
        poll_s=float(cfg["SSE_POLL_S"]),
        keepalive_s=float(cfg["SSE_KEEPALIVE_S"]),
        max_s=limit_s,
        retry_ms=int(cfg["SSE_RETRY_MS"]),
        client=request.environ.get("gunicorn.socket"),
    )
    resp = Response(stream, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"  # a buffering proxy (nginx) would hold events back
    return resp


def format_event(event: StoredEvent) -> str:
    # dumps() writes one line: newlines inside strings are escaped, so one data: field suffices.
    return f"id: {event.position}\nevent: {event.kind}\ndata: {dumps(event.record)}\n\n"


def event_stream(
    store: Store,
    room: str,
    after: int,
    *,
    poll_s: float,
    keepalive_s: float,
    max_s: float,
    retry_ms: int,
    client: socket.socket | None = None,
) -> Iterator[str]:
    """The stream's chunks: records after position ``after``, then live ones, for at most ``max_s``.

    A vanished client ends it in two ways: a write to its closed socket raises in gunicorn, which then
    closes this generator (GeneratorExit at the ``yield``); and, each poll tick, a peek at the socket
    that finds the client's FIN ends it within ``poll_s`` without waiting for the next keep-alive.
    """
    started = time.monotonic()
    deadline = started + max_s
    pending = [f"retry: {retry_ms}\n\n"]  # goes out at once, with the headers and the first records
    last_write = started
    sent = 0
    try:
        while True:
            try:
                batch = store.events_after(room, after, EVENT_BATCH)
            except SQLAlchemyError as exc:
                log.warning("event stream for %s ends: store error %s", room, type(exc).__name__)
                yield ": store unavailable; reconnect later\n\n"
                return
            if batch:
                after = batch[-1].position
                pending.extend(format_event(e) for e in batch)
                sent += len(batch)
            now = time.monotonic()
            if pending:
                yield "".join(pending)
                pending.clear()
                last_write = now
            if len(batch) == EVENT_BATCH and now < deadline:
                continue  # a backlog: read on without waiting
            if now >= deadline:
                yield ": stream lifetime reached; reconnect with Last-Event-ID\n\n"
                return
            if now - last_write >= keepalive_s:
                yield ": keep-alive\n\n"
                last_write = now
            if _client_gone(client):
                return
            time.sleep(min(poll_s, deadline - now))
    finally:
        log.debug("event stream for %s closed after %d events", room, sent)


def _client_gone(sock: socket.socket | None) -> bool:
    """True once the client closed its side (a peek reads EOF) or reset the connection.

    A client sends nothing after its request, so readable-with-no-bytes is its FIN. Not checked on TLS
    sockets (no peek there) or without a socket (WSGI test client): writes find those out instead.
    """
    if sock is None or isinstance(sock, ssl.SSLSocket) or not hasattr(socket, "MSG_DONTWAIT"):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # nothing to read: still connected
    except (OSError, ValueError):
        return True  # reset, or the socket was closed under us
