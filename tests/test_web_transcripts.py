"""Transcript read endpoints and the live event stream.

The reads and the input checks run on the Flask test client over a real SQLite store in a tmp dir.
The event stream is read by a real HTTP client (requests, streaming) from the app served by real
gunicorn (``web.serve.run_gunicorn``, gthread workers) in a subprocess on a loopback port, while this
process writes into the same database as the store job would: from another process.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from quantcoach.records import EvaluationWindow, Segment, Transcript
from quantcoach.settings import Secret, Settings
from web.app import create_app
from web.openapi import build_document

ROOT = Path(__file__).resolve().parent.parent
KEY = "transcripts-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
FAST_SSE = {"SSE_POLL_S": 0.05, "SSE_KEEPALIVE_S": 0.3, "SSE_MAX_S": 30.0, "SSE_RETRY_MS": 500}


def transcript(room: str, n: int, start: float, speaker: str = "interviewer") -> dict[str, Any]:
    who = "iv-7" if speaker == "interviewer" else "cand-3"
    return Transcript(
        room, who, speaker, "Morgan", f"{room}:{who}:{n}", f"sentence {n}", True, start, start + 1.0, "t"
    ).to_record()


def window(room: str, seq: int) -> dict[str, Any]:
    seg = Segment("iv-7", "interviewer", "Morgan", f"words {seq}", seq * 10.0, seq * 10.0 + 5)
    return EvaluationWindow(room, seq, "length", (seg,)).to_record()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def make_app(db_url: str, **overrides: Any) -> Flask:
    settings = Settings(**{"api_keys": Secret(KEY), "database_url": db_url, **overrides})
    config = {"SSE_POLL_S": 0.01, "SSE_KEEPALIVE_S": 0.05, "SSE_MAX_S": 0.3, "SSE_RETRY_MS": 500}
    return create_app(settings, config=config)


@pytest.fixture
def client(store: Store, db_url: str) -> FlaskClient:
    return make_app(db_url).test_client()


def error_code(resp: Any) -> str:
    assert resp.mimetype == "application/json", resp.get_data(as_text=True)
    return resp.get_json()["error"]["code"]


def test_transcript_in_media_time_order_as_records(client: FlaskClient, store: Store) -> None:
    resp = client.get("/rooms/mock-1/transcript", headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    items = resp.get_json()
    assert [t["start"] for t in items] == [1.5, 6.0, 12.0]
    assert items == store.transcripts("mock-1")  # the records as stored, every field
    assert {t["schema"] for t in items} == {"quantcoach.transcript/1"}
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


def test_windows_in_order(client: FlaskClient, store: Store) -> None:
    resp = client.get("/rooms/mock-1/windows", headers=AUTH)
    assert resp.status_code == 200
    assert [w["window_id"] for w in resp.get_json()] == ["mock-1:0", "mock-1:1"]
    assert resp.get_json() == store.windows("mock-1")


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
    stored = store.events_after("mock-1", 0)
    assert [(e.id, e.event, e.json()) for e in events] == [(s.position, s.kind, s.record) for s in stored]
    assert any(b.comment == "keep-alive" for b in blocks)  # idle after the backlog
    assert "reconnect with Last-Event-ID" in blocks[-1].comment
    # resuming after the second event gives the rest, and a short max_s ends the stream sooner
    t0 = time.monotonic()
    resp = client.get("/rooms/mock-1/events?max_s=0.05", headers={**AUTH, "Last-Event-ID": str(events[1].id)})
    rest = [b.id for b in parse_blocks(resp.get_data(as_text=True)) if b.event]
    assert rest == [e.id for e in events[2:]] and time.monotonic() - t0 < 0.25


# --- a small SSE client -----------------------------------------------------------------------------
@dataclass
class Block:
    """One blank-line-terminated block of an event stream."""

    id: int | None = None
    event: str = ""
    data: str = ""
    retry: int | None = None
    comment: str = ""
    at: float = field(default=0.0, compare=False)  # monotonic time it was read

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


def parse_block(text: str, at: float = 0.0) -> Block:
    b = Block(at=at)
    for line in text.split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            b.comment = value
        elif name == "id":
            b.id = int(value)
        elif name == "event":
            b.event = value
        elif name == "data":
            assert not b.data, "one data line per event"
            b.data = value
        elif name == "retry":
            b.retry = int(value)
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return b


def parse_blocks(body: str) -> list[Block]:
    assert body.endswith("\n\n")
    return [parse_block(t) for t in body[:-2].split("\n\n")]


class SSEClient:
    """Reads an event stream with requests (stream=True): each block as soon as its bytes arrive."""

    def __init__(self, url: str, last_event_id: int | None = None, read_timeout_s: float = 5.0) -> None:
        headers = dict(AUTH)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.resp = requests.get(url, headers=headers, stream=True, timeout=(5, read_timeout_s))
        self._chunks = self.resp.iter_content(chunk_size=None)  # chunks as they come, not 512 B reads
        self._buf = b""

    def next_block(self) -> Block | None:
        """The next block, or None when the server ended the stream."""
        while b"\n\n" not in self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                assert not self._buf, "stream ended mid-block"
                return None
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n\n", 1)
        return parse_block(raw.decode("utf-8"), time.monotonic())

    def events(self, n: int, within_s: float = 5.0) -> list[Block]:
        """The next ``n`` events (comments and retry blocks skipped)."""
        out: list[Block] = []
        deadline = time.monotonic() + within_s
        while len(out) < n:
            assert time.monotonic() < deadline, f"only {len(out)} of {n} events within {within_s}s"
            b = self.next_block()
            assert b is not None, "stream ended"
            if b.event:
                out.append(b)
        return out

    def until_idle(self, within_s: float = 5.0) -> list[Block]:
        """Events up to the first keep-alive comment: everything the server had to send."""
        out: list[Block] = []
        deadline = time.monotonic() + within_s
        while True:
            assert time.monotonic() < deadline, "no keep-alive"
            b = self.next_block()
            assert b is not None, "stream ended"
            if b.comment == "keep-alive":
                return out
            if b.event:
                out.append(b)

    def close(self) -> None:
        self.resp.close()  # closes the socket: the server sees EOF, then EPIPE on its next write

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the app under real gunicorn --------------------------------------------------------------------
# Settings has no SSE_* fields (they are app config), so the launcher wraps create_app to pass the
# test's timings; everything else is the production path: run_gunicorn, web/gunicorn_conf.py, gthread.
_LAUNCHER = """
import json, sys
import web.app
from quantcoach.settings import Settings
from web.serve import run_gunicorn

config = json.loads(sys.argv[2])
_create_app = web.app.create_app
web.app.create_app = lambda settings, **kw: _create_app(settings, config=config, **kw)
sys.exit(run_gunicorn(Settings.from_env(), sys.argv[1], 1))
"""


class GunicornServer:
    """``run_gunicorn`` in a subprocess: one gthread worker on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        threads: int = 2,
        config: dict[str, float] | None = None,
        timeout_s: int = 1,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "KAFKA_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            DATABASE_URL=database_url,
            QUANTCOACH_API_KEYS=KEY,
            WEB_THREADS=str(threads),
            WEB_TIMEOUT_S=str(timeout_s),  # shorter than the streams: they must not count as hung
            LOG_LEVEL="INFO",
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, f"127.0.0.1:{self.port}", json.dumps(config or FAST_SSE)],
                cwd=workdir,  # a relative DATABASE_URL would land here, never in the checkout
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{self.base}/health", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # quick shutdown: an open stream must not hold it up
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


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
    assert "Using worker: gthread" in server.log()


def check_stream(server: GunicornServer, writer: Store, room: str) -> None:
    """Backlog first, then live records, then a reconnect with Last-Event-ID: nothing missed or twice."""
    writer.upsert([transcript(room, 0, 0.0), window(room, 0), transcript(room, 1, 3.0, "candidate")])
    url = f"{server.base}/rooms/{room}/events"
    with SSEClient(url) as sse:
        assert sse.resp.status_code == 200
        assert sse.resp.headers["Content-Type"].startswith("text/event-stream")
        assert sse.next_block() == Block(retry=FAST_SSE["SSE_RETRY_MS"])
        backlog = sse.events(3)
        stored = writer.events_after(room, 0)
        assert [(b.id, b.event, b.json()) for b in backlog] == [
            (e.position, e.kind, e.record) for e in stored
        ]
        assert [b.json().get("utterance_id", b.json().get("window_id")) for b in backlog] == [
            f"{room}:iv-7:0",
            f"{room}:0",
            f"{room}:cand-3:1",
        ]
        ids = [b.id for b in backlog]
        assert ids == sorted(ids) and len(set(ids)) == 3

        # live: records committed while connected arrive, in commit order, within a few poll ticks
        writer.upsert([transcript(room, 2, 6.0)])
        committed = time.monotonic()
        live = sse.events(1)[0]
        assert live.json()["utterance_id"] == f"{room}:iv-7:2" and live.id > ids[-1]
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
    expected = writer.events_after(room, last_seen)
    assert [(b.id, b.event, b.json()) for b in missed] == [(e.position, e.kind, e.record) for e in expected]
    assert len(missed) == 3
    seen = [*ids, live.id, *(b.id for b in more), *(b.id for b in missed)]
    assert seen == [e.position for e in writer.events_after(room, 0)]  # all of them, each once


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
        assert sse.events(1)[0].json()["utterance_id"] == "sse-idle:iv-7:1"  # still live
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
    expected = [e.position for e in writer.events_after(room, 0)][1:]
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


# --- fuzz: the three operations against stored rooms, streams bounded by SSE_MAX_S ------------------
# test_web_fuzz covers every operation against an app whose store is empty (404s); this one stores
# records under the room names the schema's examples and hypothesis favour, so that streams, since and
# format do real work. SSE_MAX_S bounds each stream, so a fuzzed stream ends instead of hanging.
FUZZ_ROOMS = ("0", "A", "a", "00")


class _LateApp:
    target: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.target is not None, "fuzz_app fixture not active"
        return self.target(environ, start_response)


_late = _LateApp()
_schema = schemathesis.openapi.from_dict(build_document(create_app(Settings()))).include(
    path_regex=r"^/rooms/\{name\}/(transcript|windows|events)$"
)
_schema.app = _late
_schema.config.generation.update(max_examples=40)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/store.db"
    s = Store(url)
    for room in FUZZ_ROOMS:
        s.upsert([transcript(room, 0, 0.0), transcript(room, 1, 2.5, "candidate"), window(room, 0)])
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
