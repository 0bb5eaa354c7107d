"""What the transcript store holds, served: read endpoints and a live Server-Sent Events stream.

``GET /rooms/<name>/transcript``  final transcripts in media-time order (JSON records, or ``?format=text``)
``GET /rooms/<name>/windows``     evaluation windows in order
``GET /rooms/<name>/events``      SSE: the stored records from the start (or after ``Last-Event-ID``),
                                  then new ones as they land; ``id`` is the store position

The store is written by another process (``quantcoach store``, ``replay --store``); this app only reads
it. It is opened once per app, on first use, so that the API starts (and its other routes serve) while
the database is down: these routes then answer 503 and the next request tries again.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from connectors.store import Store, StoredEvent
from quantcoach.records import dumps
from web import errors
from web.app import services
from web.errors import ApiError, error_response

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
OPEN_RETRY_S = 2.0  # after a failed open, requests answer 503 at once for this long before trying again
PG_CONNECT_TIMEOUT_S = 5  # an unreachable PostgreSQL host must not hold a request thread for minutes

_NUMBER_RE = re.compile(r"\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EVENT_ID_RE = re.compile(r"[0-9]{1,18}")  # a store position: fits a signed 64-bit integer
FORMATS = ("json", "text")


def _unavailable() -> ApiError:
    return ApiError(503, "store_unavailable", "the transcript store is unavailable; try again later")


class StoreAccess:
    """The app's one transcript store, opened on first use and shared by the request threads.

    A SQLite file that does not exist yet means nothing is stored yet: ``get()`` answers ``None`` and
    creates nothing (reads must not create the database of a store job that has not run; the tests'
    apps then leave no file behind). A failed open is retried, at most every ``OPEN_RETRY_S``.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._secret = ""
        self._sqlite_file: Path | None = None
        self._store: Store | None = None
        self._retry_at = -math.inf
        self._lock = threading.Lock()
        try:
            parsed = make_url(url)
        except (SQLAlchemyError, ValueError):
            return  # the app still starts; each open attempt fails and answers 503
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database or ""
            if db and db != ":memory:" and not db.startswith("file:"):
                self._sqlite_file = Path(db)
        elif parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            parsed = parsed.update_query_dict({"connect_timeout": str(PG_CONNECT_TIMEOUT_S)})
            self._url = parsed.render_as_string(hide_password=False)
        self._secret = parsed.password or ""

    def get(self) -> Store | None:
        """The store, or ``None`` while its SQLite file does not exist; ``ApiError`` 503 if unreachable."""
        store = self._store
        if store is not None:
            return store
        if self._sqlite_file is not None and not self._sqlite_file.exists():
            return None
        with self._lock:  # one open at a time; the others wait for its result
            if self._store is not None:
                return self._store
            if time.monotonic() < self._retry_at:
                raise _unavailable()
            try:
                self._store = Store(self._url)
            except (SQLAlchemyError, OSError, ValueError, ImportError) as exc:
                self._retry_at = time.monotonic() + OPEN_RETRY_S
                log.warning("transcript store unavailable: %s", self._describe(exc))
                raise _unavailable() from None
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _describe(self, exc: BaseException) -> str:
        # First line only (SQLAlchemy appends SQL and links), with the URL and password masked.
        text = (str(exc).strip().splitlines() or [""])[0].replace(self._url, "(DATABASE_URL)")
        if self._secret:
            text = text.replace(self._secret, "***")
        return f"{type(exc).__name__}: {text}"


@bp.errorhandler(SQLAlchemyError)
def _store_error(exc: SQLAlchemyError) -> Response:
    # The store went away after it was opened (server restarted, file locked for too long).
    log.warning("transcript store error: %s", type(exc).__name__)
    return error_response(503, "store_unavailable", "the transcript store is unavailable; try again later")


# --- input ------------------------------------------------------------------------------------------
def _number(field: str, *, positive: bool) -> float | None:
    """A query parameter that must be a finite decimal number, ``>= 0`` (or ``> 0``); absent: None."""
    raw = request.args.get(field)
    if raw is None:
        return None
    value = float(raw) if _NUMBER_RE.fullmatch(raw) else math.nan
    if not math.isfinite(value) or (positive and value <= 0):
        bound = "> 0" if positive else ">= 0"
        raise ApiError(400, f"invalid_{field}", f"{field}: a finite number {bound}")
    return value


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
def transcript(name: str) -> ResponseReturnValue:
    name = errors.room_name(name, "room name")
    fmt = request.args.get("format", "json")
    if fmt not in FORMATS:
        raise ApiError(400, "invalid_format", f"format: one of {', '.join(FORMATS)}")
    since = _number("since", positive=False)
    store = _room_store(name)
    items = store.transcripts(name, since)
    if fmt == "text":
        body = "".join(f"{t['speaker'].capitalize()}: {t['text']}\n" for t in items)
        return Response(body, mimetype="text/plain")
    return jsonify(items)


@bp.get("/rooms/<room:name>/windows")
def windows(name: str) -> ResponseReturnValue:
    name = errors.room_name(name, "room name")
    return jsonify(_room_store(name).windows(name))


# --- the event stream -----------------------------------------------------------------------------
@bp.get("/rooms/<room:name>/events")
def events(name: str) -> ResponseReturnValue:
    name = errors.room_name(name, "room name")
    after = _last_event_id()
    max_s = _number("max_s", positive=True)
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
