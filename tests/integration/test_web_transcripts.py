"""Transcript read endpoints of a room (its latest session) and the live event stream.

The reads and the input checks run on the Flask test client over a real SQLite store in a tmp dir.
The event stream is read by a real HTTP client (requests, streaming) from the app served by real
gunicorn (``web.serve.run_gunicorn``, gthread workers) in a subprocess on a loopback port, while this
process writes into the same database as the store job would: from another process.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError

from connectors.store import Store
from harness.gunicorn import FAST_SSE, Block, GunicornServer, SSEClient, parse_blocks
from harness.ports import free_port
from quantcoach.settings import Secret, Settings
from quantcoach.wire import validate
from tests.support import records
from tests.support.web import AUTH, KEY, error_code, make_app, sid, transcript, window
from web.app import create_app
from web.openapi import build_document


# --- the Flask test client over a SQLite store ------------------------------------------------------
@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upsert(
        [
            transcript("mock-1", 2, 12.0, "candidate"),
            window("mock-1", 1),
            transcript("mock-1", 0, 1.5),
            window("mock-1", 0),
            transcript("mock-1", 1, 6.0, "candidate"),
            transcript("other", 0, 0.0),
            window("only-windows", 0),
        ]
    )
    yield s
    s.close()


@pytest.fixture
def client(store: Store, db_url: str) -> FlaskClient:
    return make_app(db_url).test_client()


def test_transcript_in_media_time_order_as_records(client: FlaskClient, store: Store) -> None:
    resp = client.get("/rooms/mock-1/transcript", headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    items = resp.get_json()
    assert [t["start"] for t in items] == [1.5, 6.0, 12.0]
    assert items == store.transcripts(sid("mock-1"))  # the records as stored, every field
    assert {t["schema"] for t in items} == {"quantcoach.transcript/2"}
    for t in items:
        validate(t)
    assert client.get("/rooms/mock-1/transcript?format=json", headers=AUTH).get_json() == items


def test_transcript_since(client: FlaskClient) -> None:
    def starts(query: str) -> list[float]:
        resp = client.get(f"/rooms/mock-1/transcript?{query}", headers=AUTH)
        assert resp.status_code == 200
        return [t["start"] for t in resp.get_json()]

    assert starts("since=6") == [6.0, 12.0]  # a transcript starting at `since` is included
    assert starts("since=6.5") == [12.0]
    assert starts("since=0") == [1.5, 6.0, 12.0]
    assert starts("since=1e3") == []  # the room exists: an empty list, not 404


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", "1e999", "", "1_0", "0x10", "--1"])
def test_transcript_since_must_be_a_finite_number_not_below_zero(client: FlaskClient, value: str) -> None:
    resp = client.get("/rooms/mock-1/transcript", query_string={"since": value}, headers=AUTH)
    assert resp.status_code == 400 and error_code(resp) == "invalid_since"


def test_transcript_as_text_lines(client: FlaskClient) -> None:
    resp = client.get("/rooms/mock-1/transcript?format=text", headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    assert resp.get_data(as_text=True) == (
        "Interviewer: sentence 0\nCandidate: sentence 1\nCandidate: sentence 2\n"
    )
    resp = client.get("/rooms/mock-1/transcript?format=text&since=10", headers=AUTH)
    assert resp.get_data(as_text=True) == "Candidate: sentence 2\n"
    resp = client.get("/rooms/mock-1/transcript?format=xml", headers=AUTH)
    assert resp.status_code == 400 and error_code(resp) == "invalid_format"


@pytest.mark.parametrize(
    ("fmt", "mime", "first"), [("vtt", "text/vtt", "WEBVTT"), ("srt", "application/x-subrip", "1")]
)
def test_transcript_as_subtitles(client: FlaskClient, fmt: str, mime: str, first: str) -> None:
    resp = client.get(f"/rooms/mock-1/transcript?format={fmt}", headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == mime
    body = resp.get_data(as_text=True)
    assert body.splitlines()[0] == first and body.count("sentence") == 3


def test_room_routes_answer_for_the_rooms_latest_session(client: FlaskClient, store: Store) -> None:
    # The room name is reused for a second interview: the room's routes now answer for that one.
    store.upsert([transcript("mock-1", 0, 0.5, session="S_again"), window("mock-1", 0, session="S_again")])
    items = client.get("/rooms/mock-1/transcript", headers=AUTH).get_json()
    assert [t["utterance_id"] for t in items] == ["S_again:iv-7:0"]
    assert [w["window_id"] for w in client.get("/rooms/mock-1/windows", headers=AUTH).get_json()] == [
        "S_again:0"
    ]
    blocks = parse_blocks(client.get("/rooms/mock-1/events", headers=AUTH).get_data(as_text=True))
    assert {b.json()["session_id"] for b in blocks if b.event} == {"S_again"}
    # ... and the first one is still there, whole, under its own id
    assert len(client.get(f"/sessions/{sid('mock-1')}/transcript", headers=AUTH).get_json()) == 3


def test_windows_in_order(client: FlaskClient, store: Store) -> None:
    resp = client.get("/rooms/mock-1/windows", headers=AUTH)
    assert resp.status_code == 200
    assert [w["window_id"] for w in resp.get_json()] == [f"{sid('mock-1')}:0", f"{sid('mock-1')}:1"]
    assert resp.get_json() == store.windows(sid("mock-1"))


def test_a_room_with_only_windows_has_an_empty_transcript(client: FlaskClient) -> None:
    assert client.get("/rooms/only-windows/transcript", headers=AUTH).get_json() == []
    assert len(client.get("/rooms/only-windows/windows", headers=AUTH).get_json()) == 1


@pytest.mark.parametrize("path", ["transcript", "windows", "events"])
def test_nothing_stored_is_404(client: FlaskClient, path: str) -> None:
    resp = client.get(f"/rooms/nobody-here/{path}", headers=AUTH)
    assert resp.status_code == 404 and error_code(resp) == "room_not_found"


@pytest.mark.parametrize("path", ["transcript", "windows", "events"])
@pytest.mark.parametrize("name", ["-dash-first", "a" * 65, "create", "sp%20ace", "col:on"])
def test_room_names_are_validated_like_rooms(client: FlaskClient, path: str, name: str) -> None:
    resp = client.get(f"/rooms/{name}/{path}", headers=AUTH)
    assert resp.status_code == 400 and error_code(resp) == "invalid_room_name"


@pytest.mark.parametrize("path", ["transcript", "windows", "events"])
def test_api_key_required(client: FlaskClient, db_url: str, path: str) -> None:
    url = f"/rooms/mock-1/{path}"
    assert error_code(client.get(url)) == "missing_api_key"
    assert client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    closed = make_app(db_url, api_keys=Secret("")).test_client()  # no keys configured: closed, not open
    assert closed.get(url, headers=AUTH).status_code == 403


def test_missing_sqlite_file_is_404_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "never" / "q.db"
    client = make_app(f"sqlite:///{db}").test_client()
    assert client.get("/rooms/mock-1/transcript", headers=AUTH).status_code == 404
    assert not db.parent.exists()  # reads create no database; the store job will
    Store(f"sqlite:///{db}").upsert([transcript("mock-1", 0, 0.0)])  # ... once it runs
    assert len(client.get("/rooms/mock-1/transcript", headers=AUTH).get_json()) == 1


def test_unreachable_database_is_503_and_the_app_still_starts(caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql+psycopg://qc:hunter2-secret@127.0.0.1:{free_port()}/nope"  # nothing listens
    client = make_app(url).test_client()  # create_app does not touch the database
    assert client.get("/health").status_code == 200
    for path in ("transcript", "windows", "events"):
        resp = client.get(f"/rooms/mock-1/{path}", headers=AUTH)
        assert resp.status_code == 503 and error_code(resp) == "store_unavailable"
    assert "transcript store unavailable" in caplog.text
    assert "hunter2-secret" not in caplog.text


def test_store_failure_after_open_is_503(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/rooms/mock-1/windows", headers=AUTH).status_code == 200  # opened
    store = client.application.extensions["quantcoach"].store.get()

    def down(*_: Any, **__: Any) -> None:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store, "windows", down)
    resp = client.get("/rooms/mock-1/windows", headers=AUTH)
    assert resp.status_code == 503 and error_code(resp) == "store_unavailable"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1" * 19, "1 2"])
def test_last_event_id_is_validated(client: FlaskClient, value: str) -> None:
    resp = client.get("/rooms/mock-1/events", headers={**AUTH, "Last-Event-ID": value})
    assert resp.status_code == 400 and error_code(resp) == "invalid_last_event_id"


@pytest.mark.parametrize("value", ["0", "-1", "x", "inf"])
def test_max_s_is_validated(client: FlaskClient, value: str) -> None:
    resp = client.get(f"/rooms/mock-1/events?max_s={value}", headers=AUTH)
    assert resp.status_code == 400 and error_code(resp) == "invalid_max_s"


def test_event_stream_format_in_process(client: FlaskClient, store: Store) -> None:
    # Under the test client the stream ends at SSE_MAX_S (0.3 s): the whole body can be read.
    resp = client.get("/rooms/mock-1/events", headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Accel-Buffering"] == "no"
    blocks = parse_blocks(resp.get_data(as_text=True))
    assert blocks[0] == Block(retry=500)
    events = [b for b in blocks if b.event]
    stored = store.events_after(sid("mock-1"), 0)
    assert [(e.id, e.event, e.json()) for e in events] == [(s.position, s.kind, s.record) for s in stored]
    assert any(b.comment == "keep-alive" for b in blocks)  # idle after the backlog
    assert "reconnect with Last-Event-ID" in blocks[-1].comment
    # resuming after the second event gives the rest, and a short max_s ends the stream sooner
    t0 = time.monotonic()
    resp = client.get("/rooms/mock-1/events?max_s=0.05", headers={**AUTH, "Last-Event-ID": str(events[1].id)})
    rest = [b.id for b in parse_blocks(resp.get_data(as_text=True)) if b.event]
    assert rest == [e.id for e in events[2:]] and time.monotonic() - t0 < 0.25


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornServer, Store]]:
    workdir = tmp_path_factory.mktemp("sse")
    url = f"sqlite:///{workdir}/store.db"
    writer = Store(url)  # this process is the writer, as the store job is in production
    server = GunicornServer(url, workdir)
    try:
        yield server, writer
    finally:
        server.stop()
        writer.close()
    # gthread, or web.gunicorn_hardening's subclass of it (gunicorn's own errors as JSON)
    assert re.search(r"Using worker: (gthread|web\.gunicorn_hardening\.JsonErrorWorker)$", server.log(), re.M)


def check_stream(server: GunicornServer, writer: Store, room: str) -> None:
    """Backlog first, then live records, then a reconnect with Last-Event-ID: nothing missed or twice."""
    writer.upsert([transcript(room, 0, 0.0), window(room, 0), transcript(room, 1, 3.0, "candidate")])
    url = f"{server.base}/rooms/{room}/events"
    with SSEClient(url) as sse:
        assert sse.resp.status_code == 200
        assert sse.resp.headers["Content-Type"].startswith("text/event-stream")
        assert sse.next_block() == Block(retry=FAST_SSE["SSE_RETRY_MS"])
        backlog = sse.events(3)
        stored = writer.events_after(sid(room), 0)
        assert [(b.id, b.event, b.json()) for b in backlog] == [
            (e.position, e.kind, e.record) for e in stored
        ]
        assert [b.json().get("utterance_id", b.json().get("window_id")) for b in backlog] == [
            f"{sid(room)}:iv-7:0",
            f"{sid(room)}:0",
            f"{sid(room)}:cand-3:1",
        ]
        ids = [b.id for b in backlog]
        assert ids == sorted(ids) and len(set(ids)) == 3

        # live: records committed while connected arrive, in commit order, within a few poll ticks
        writer.upsert([transcript(room, 2, 6.0)])
        committed = time.monotonic()
        live = sse.events(1)[0]
        assert live.json()["utterance_id"] == f"{sid(room)}:iv-7:2" and live.id > ids[-1]
        assert live.at - committed < 2.0  # SSE_POLL_S = 0.05
        writer.upsert([window(room, 1), transcript(room, 3, 9.0)])
        writer.upsert([transcript(room, 2, 6.0)])  # a re-delivery: stored once, sent once
        more = sse.until_idle()
        assert [b.event for b in more] == ["window", "transcript"]
        last_seen = more[-1].id

    # records that land while the client is away are exactly what the reconnect gets
    writer.upsert([transcript(room, 4, 12.0), window(room, 2)])
    writer.upsert([transcript(room, 5, 15.0)])
    with SSEClient(url, last_event_id=last_seen) as sse:
        missed = sse.until_idle()
    expected = writer.events_after(sid(room), last_seen)
    assert [(b.id, b.event, b.json()) for b in missed] == [(e.position, e.kind, e.record) for e in expected]
    assert len(missed) == 3
    seen = [*ids, live.id, *(b.id for b in more), *(b.id for b in missed)]
    assert seen == [e.position for e in writer.events_after(sid(room), 0)]  # all of them, each once


def test_sse_under_gunicorn_backlog_live_and_reconnect(served: tuple[GunicornServer, Store]) -> None:
    check_stream(*served, room="sse-sqlite")


def test_sse_keep_alive_while_idle_past_the_worker_timeout(served: tuple[GunicornServer, Store]) -> None:
    server, writer = served  # WEB_TIMEOUT_S=1: gthread's heartbeat does not depend on the stream
    writer.upsert([transcript("sse-idle", 0, 0.0)])
    with SSEClient(f"{server.base}/rooms/sse-idle/events") as sse:
        assert len(sse.events(1)) == 1
        blocks = [sse.next_block() for _ in range(8)]  # ~2.4 s of idle stream
        assert [b.comment for b in blocks if b] == ["keep-alive"] * 8
        gaps = [b.at - a.at for a, b in itertools.pairwise(blocks) if a and b]
        assert all(0.15 < g < 2.0 for g in gaps), gaps  # SSE_KEEPALIVE_S = 0.3
        writer.upsert([transcript("sse-idle", 1, 1.0)])
        assert sse.events(1)[0].json()["utterance_id"] == f"{sid('sse-idle')}:iv-7:1"  # still live
    assert "WORKER TIMEOUT" not in server.log()


def test_sse_stream_ends_after_max_s(served: tuple[GunicornServer, Store]) -> None:
    server, writer = served
    writer.upsert([transcript("sse-short", 0, 0.0)])
    t0 = time.monotonic()
    with SSEClient(f"{server.base}/rooms/sse-short/events?max_s=0.4") as sse:
        blocks = []
        while (b := sse.next_block()) is not None:
            blocks.append(b)
    assert 0.3 < time.monotonic() - t0 < 3
    assert blocks[0].retry == 500 and [b.event for b in blocks if b.event] == ["transcript"]
    assert "reconnect with Last-Event-ID" in blocks[-1].comment


def test_sse_errors_are_json_under_gunicorn(served: tuple[GunicornServer, Store]) -> None:
    server, _ = served
    resp = requests.get(f"{server.base}/rooms/nobody/events", headers=AUTH, timeout=5)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "room_not_found"
    resp = requests.get(
        f"{server.base}/rooms/nobody/events", headers={**AUTH, "Last-Event-ID": "x"}, timeout=5
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_last_event_id"
    assert requests.get(f"{server.base}/rooms/nobody/events", timeout=5).status_code == 401


def test_a_vanished_client_frees_its_thread(served: tuple[GunicornServer, Store]) -> None:
    server, writer = served  # one worker with 2 threads: a leaked stream would starve it at once
    writer.upsert([transcript("sse-leave", 0, 0.0)])
    url = f"{server.base}/rooms/sse-leave/events"
    t0 = time.monotonic()
    for _ in range(3):
        streams = [SSEClient(url, read_timeout_s=3), SSEClient(url, read_timeout_s=3)]  # every thread
        for s in streams:
            assert len(s.events(1)) == 1
        for s in streams:
            s.close()
    # both threads are free again: a plain request and a new stream are served at once
    resp = requests.get(f"{server.base}/rooms/sse-leave/transcript", headers=AUTH, timeout=3)
    assert resp.status_code == 200
    with SSEClient(url, read_timeout_s=3) as sse:
        assert len(sse.events(1)) == 1
    assert time.monotonic() - t0 < 10


def test_concurrent_streams_each_get_every_record(served: tuple[GunicornServer, Store]) -> None:
    server, writer = served
    room = "sse-two"
    writer.upsert([transcript(room, 0, 0.0)])
    with (
        SSEClient(f"{server.base}/rooms/{room}/events") as a,
        SSEClient(f"{server.base}/rooms/{room}/events") as b,
    ):
        a.events(1), b.events(1)
        done = threading.Event()

        def write() -> None:
            for i in range(1, 21):
                writer.upsert([transcript(room, i, float(i))])
                time.sleep(0.005)
            done.set()

        threading.Thread(target=write, daemon=True).start()
        got_a, got_b = a.events(20), b.events(20)
    assert done.wait(5)
    expected = [e.position for e in writer.events_after(sid(room), 0)][1:]
    assert [e.id for e in got_a] == expected == [e.id for e in got_b]


def test_sse_under_gunicorn_with_postgresql(postgres_url: str, tmp_path: Path) -> None:
    writer = Store(postgres_url)
    room = f"sse-pg-{os.getpid()}-{time.monotonic_ns()}"  # the server is shared by the session
    server = GunicornServer(postgres_url, tmp_path)
    try:
        check_stream(server, writer, room)
    finally:
        server.stop()
        writer.close()


# --- fuzz: the store's operations against stored rooms and sessions, streams bounded by SSE_MAX_S ----
# test_web_fuzz covers every operation against an app whose store is empty (404s); this one stores
# records under the room names and session ids the schema's examples and hypothesis favour (each room's
# session is named as the room), so that streams, since, format, metrics and reports do real work.
# SSE_MAX_S bounds each stream, so a fuzzed stream ends instead of hanging.
FUZZ_ROOMS = ("0", "A", "a", "00")


class _LateApp:
    target: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.target is not None, "fuzz_app fixture not active"
        return self.target(environ, start_response)


_late = _LateApp()
_schema = schemathesis.openapi.from_dict(build_document(create_app(Settings()))).include(
    path_regex=r"^/(rooms/\{name\}/(transcript|windows|events|sessions)|sessions/\{session_id\}/\w+)$"
)
_schema.app = _late
_schema.config.generation.update(max_examples=40)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/store.db"
    s = Store(url)
    for room in FUZZ_ROOMS:
        s.upsert(
            [transcript(room, 0, 0.0, session=room), transcript(room, 1, 2.5, "candidate", session=room)]
        )
        s.upsert([window(room, 0, session=room), records.metrics(room, 3.5, room=room)])
    s.close()
    app = create_app(
        Settings(api_keys=Secret(KEY), database_url=url),
        config={"SSE_POLL_S": 0.005, "SSE_KEEPALIVE_S": 0.01, "SSE_MAX_S": 0.02},
    )
    _late.target = app
    yield app
    _late.target = None


@_schema.parametrize()
@hypothesis.settings(database=None, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_fuzz_store_routes(case: schemathesis.Case, fuzz_app: Flask) -> None:
    response = case.call_and_validate(headers=AUTH)
    assert response.status_code < 500 or response.status_code == 503, response.text
