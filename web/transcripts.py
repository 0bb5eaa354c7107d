"""What the transcript store holds, served: the room routes, and the event stream they share with
``web.sessions``.

``GET /rooms/<name>/transcript``  the room's latest session's final transcripts in media-time order
                                  (JSON records; ``?format=text`` lines, ``vtt`` or ``srt`` subtitles)
``GET /rooms/<name>/windows``     its evaluation windows in order
``GET /rooms/<name>/events``      SSE: its stored records from the start (or after ``Last-Event-ID``),
                                  then new ones as they land; ``id`` is the store position

A room name is not an interview (names are reused): these routes answer for the room's latest session,
the one the store saw last; ``/rooms/<name>/sessions`` and ``/sessions/<id>/...`` (``web.sessions``)
reach every session. The store is written by another process (``quantcoach store``, ``replay
--store``); this app only reads it, through ``web.services.StoreAccess`` (opened on first use; 503
while the database is down).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from connectors import subtitles
from connectors.store import Store, StoredEvent
from quantcoach.records import dumps
from quantcoach.wire import TranscriptRecord, WindowRecord
from web import streams, validation
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
    # notification at all, and one indexed (session, position) lookup per tick is cheap for either database.
    "SSE_POLL_S": 0.25,
    # A comment line after this long without a write (s): keeps proxies from closing an idle stream,
    # and is the write that finds a vanished client when its socket cannot be inspected.
    "SSE_KEEPALIVE_S": 15.0,
    # Longest life of one stream (s); the client then reconnects with Last-Event-ID. It bounds how
    # long a gunicorn thread is held by a client that vanished without a trace (no FIN, no RST).
    "SSE_MAX_S": 600.0,
    # ``retry:`` sent first: how long an EventSource waits before reconnecting (ms).
    "SSE_RETRY_MS": 2000,
    # A write to a client that does not read waits at most this long (s); then the stream is dropped.
    "SSE_SEND_TIMEOUT_S": 5.0,
    # Over the cap of streams per worker: 503 with this Retry-After (s).
    "SSE_RETRY_AFTER_S": 5,
}
EVENT_BATCH = 500  # records per store read; a longer backlog is read in further batches at once
EVENT_ID_PATTERN = "[0-9]{1,18}"  # a store position: fits a signed 64-bit integer
_EVENT_ID_RE = re.compile(EVENT_ID_PATTERN)
FORMATS = ("json", "text", *subtitles.FORMATS)
EVENT_KINDS = ("transcript", "window", "session", "metrics")


# --- input ------------------------------------------------------------------------------------------
class TranscriptQuery(BaseModel):
    # format first: of two bad parameters, the format is the one reported
    format: Annotated[
        Literal[FORMATS],
        Field(
            description="`text`: one `Interviewer: ...` line per transcript; `vtt`: WebVTT with `<v Name>` "
            "voice tags; `srt`: SubRip"
        ),
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
    after: Annotated[
        str | None,
        Field(
            pattern=f"^{EVENT_ID_PATTERN}$",
            description="start after this event id when no `Last-Event-ID` is sent (a page that already "
            "holds the records up to it); `Last-Event-ID` wins",
        ),
        Invalid("invalid_after", "an event id (a non-negative integer)"),
    ] = None


class StreamEvent(BaseModel):
    """One Server-Sent Event of a session's stream (`/sessions/{session_id}/events`, or
    `/rooms/{name}/events` for the room's latest session)"""

    event: Literal[EVENT_KINDS]
    data: str = Field(
        description="the record's JSON: `Transcript`, `Window`, `Session` (started/ended) or `Metrics` "
        "(the session's latest: a newer one replaces it)"
    )
    id: str = Field(pattern="^[0-9]+$", description="the store position")


LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "description": "resume after this event id (EventSource sends it when it reconnects); absent or "
    "empty: after `after`, else from the session's first record",
    "schema": {"type": "string", "pattern": f"^(|{EVENT_ID_PATTERN})$"},
}


def _last_event_id(after: str | None) -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        # no id yet (an EventSource sends none before its first event): after `after`, else from the start
        return int(after) if after else 0
    if not _EVENT_ID_RE.fullmatch(raw):
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID: an event id (a non-negative integer)")
    return int(raw)


def _room_session(name: str) -> tuple[Store, str]:
    """The store and the room's latest session; 404 when nothing is stored for the room (or 503)."""
    store = services().need_store().get()
    session_id = store.latest_session(name) if store is not None else None
    if store is None or session_id is None:
        raise ApiError(404, "room_not_found", f"nothing stored for room {name!r}")
    return store, session_id


def transcript_response(store: Store, session_id: str, q: TranscriptQuery) -> ResponseReturnValue:
    """A session's transcripts as ``q`` asks: JSON records, text lines or subtitles."""
    items = store.transcripts(session_id, q.since)
    if q.format == "text":
        body = "".join(f"{t['speaker'].capitalize()}: {t['text']}\n" for t in items)
        return Response(body, mimetype="text/plain")
    if q.format in subtitles.FORMATS:
        return Response(subtitles.render(items, q.format), content_type=subtitles.FORMATS[q.format])
    return jsonify(items)


def events_request() -> tuple[int, float | None]:
    """The stream's start (``Last-Event-ID``, else ``after``, else 0) and ``max_s``; 400 when invalid."""
    q = validation.query(EventsQuery)
    return _last_event_id(q.after), q.max_s


def events_response(store: Store, session_id: str, after: int, max_s: float | None) -> ResponseReturnValue:
    """The event stream of one session, after position ``after``, for at most ``max_s`` (capped); 503
    with ``Retry-After`` when this worker already holds its cap of streams."""
    cfg = current_app.config
    limit_s = float(cfg["SSE_MAX_S"]) if max_s is None else min(max_s, float(cfg["SSE_MAX_S"]))
    if request.method == "HEAD":  # no body will be read: no stream, no slot (it would never be released)
        head = Response(mimetype="text/event-stream")
        head.headers["Cache-Control"] = "no-store"
        return head
    slots: streams.StreamSlots = current_app.extensions["sse_slots"]
    if not slots.acquire():
        retry = {"Retry-After": str(int(cfg["SSE_RETRY_AFTER_S"]))}
        message = f"this server holds its {slots.cap} live streams; retry shortly"
        raise ApiError(503, "too_many_streams", message, retry)
    # Everything the generator needs is taken now: it runs after the view has returned, outside the
    # request context, on the gunicorn thread that writes it out.
    poll_s = float(cfg["SSE_POLL_S"])
    stream = event_stream(
        store,
        session_id,
        after,
        poll_s=poll_s,
        keepalive_s=float(cfg["SSE_KEEPALIVE_S"]),
        max_s=limit_s,
        retry_ms=int(cfg["SSE_RETRY_MS"]),
        client=request.environ.get("gunicorn.socket"),
        poller=streams.poller_for(store, poll_s, EVENT_BATCH),
        send_timeout_s=float(cfg["SSE_SEND_TIMEOUT_S"]),
        on_close=slots.release,
    )
    resp = Response(stream, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"  # a buffering proxy (nginx) would hold events back
    return resp


#: The event stream's documentation, shared by the room and the session routes.
EVENTS_DESCRIPTION = (
    "Events `transcript`, `window`, `session` (started/ended) and `metrics`; `data` is the record's JSON "
    "on one line, `id` its store position (increasing). The stream starts with `retry: <ms>`, sends "
    "`: keep-alive` comments while idle and ends after a server-set lifetime (or `max_s`); reconnect with "
    "`Last-Event-ID` to get exactly the records after that id."
)
EVENTS_OK = ("an event stream (the schema is one event's)", {"text/event-stream": StreamEvent})


# --- the room's latest session -------------------------------------------------------------------
@bp.get("/rooms/<room:name>/transcript")
@operation(
    "getTranscript",
    "The final transcripts of the room's latest session, in media-time order",
    ok=(
        "transcripts (JSON records; text lines with `format=text`; subtitles with `vtt` or `srt`)",
        {
            "application/json": list[TranscriptRecord],
            "text/plain": {"type": "string"},
            **{mime.split(";")[0]: {"type": "string"} for mime in subtitles.FORMATS.values()},
        },
    ),
    query=TranscriptQuery,
    errors=STORE_ERRORS,
)
def transcript(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    q = validation.query(TranscriptQuery)
    return transcript_response(*_room_session(name), q)


@bp.get("/rooms/<room:name>/windows")
@operation(
    "getWindows",
    "The evaluation windows of the room's latest session, in order",
    ok=("windows", list[WindowRecord]),
    errors=STORE_ERRORS,
)
def windows(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    store, session_id = _room_session(name)
    return jsonify(store.windows(session_id))


@bp.get("/rooms/<room:name>/events")
@operation(
    "roomEvents",
    "Server-Sent Events of the room's latest session: its stored records, then new ones as they land",
    description=EVENTS_DESCRIPTION + " The session is the room's latest when the stream starts.",
    ok=EVENTS_OK,
    query=EventsQuery,
    headers=(LAST_EVENT_ID,),
    errors=STORE_ERRORS,
)
def events(name: str) -> ResponseReturnValue:
    name = validation.room_name(name)
    after, max_s = events_request()  # input errors before the store is asked
    return events_response(*_room_session(name), after, max_s)


def format_event(event: StoredEvent) -> str:
    # dumps() writes one line: newlines inside strings are escaped, so one data: field suffices.
    return f"id: {event.position}\nevent: {event.kind}\ndata: {dumps(event.record)}\n\n"


def event_stream(
    store: Store,
    session_id: str,
    after: int,
    *,
    poll_s: float,
    keepalive_s: float,
    max_s: float,
    retry_ms: int,
    client: socket.socket | None = None,
    poller: streams.SessionPoller | None = None,
    send_timeout_s: float | None = None,
    on_close: Callable[[], None] | None = None,
) -> Iterator[str]:
    """The stream's chunks: records after position ``after`` (the backlog, read here), then live ones
    from the worker's ``poller``, for at most ``max_s``.

    A vanished client ends it in two ways: a write to its closed socket raises in gunicorn, which then
    closes this generator (GeneratorExit at the ``yield``); and, each poll tick, a peek at the socket
    that finds the client's FIN ends it within ``poll_s`` without waiting for the next keep-alive. A
    client that stops reading makes a write wait: after ``send_timeout_s`` it raises and the stream ends.
    """
    started = time.monotonic()
    deadline = started + max_s
    poller = poller or streams.SessionPoller(store.events_after, poll_s, EVENT_BATCH)
    _send_timeout(client, send_timeout_s)
    sub: streams.Subscription | None = None
    sent = 0
    try:
        chunk = [f"retry: {retry_ms}\n\n"]  # goes out at once, with the headers and the first records
        while True:  # the backlog, in batches
            try:
                batch = store.events_after(session_id, after, EVENT_BATCH)
            except SQLAlchemyError as exc:
                log.warning("event stream for %s ends: store error %s", session_id, type(exc).__name__)
                yield "".join(chunk) + ": store unavailable; reconnect later\n\n"
                return
            if batch:
                after = batch[-1].position
                chunk.extend(format_event(e) for e in batch)
                sent += len(batch)
            yield "".join(chunk)
            chunk = []
            if len(batch) < EVENT_BATCH or time.monotonic() >= deadline:
                break
        sub = poller.subscribe(session_id, after)
        last_write = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                yield ": stream lifetime reached; reconnect with Last-Event-ID\n\n"
                return
            try:
                got = sub.events.get(timeout=max(0.0, min(poll_s, deadline - now)))
            except queue.Empty:
                got = None
            if isinstance(got, BaseException):
                log.warning("event stream for %s ends: store error %s", session_id, type(got).__name__)
                yield ": store unavailable; reconnect later\n\n"
                return
            if got:
                sent += len(got)
                yield "".join(format_event(e) for e in got)
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= keepalive_s:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
            if _client_gone(client):
                return
    finally:
        if sub is not None:
            poller.unsubscribe(sub)
        if send_timeout_s is not None:
            _send_timeout(client, 0.0)  # no timeout again, as gunicorn handed the socket over
        if on_close is not None:
            on_close()
        log.debug("event stream for %s closed after %d events", session_id, sent)


def _send_timeout(sock: socket.socket | None, seconds: float | None) -> None:
    """SO_SNDTIMEO, the kernel's own send timeout: a blocked write fails after ``seconds`` (0 = never).
    Not ``settimeout``, which would turn the socket non-blocking under Python and make the peek in
    ``_client_gone`` wait."""
    if sock is None or seconds is None or isinstance(sock, ssl.SSLSocket):
        return
    whole = int(seconds)
    with contextlib.suppress(OSError, ValueError):
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6))
        )


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
