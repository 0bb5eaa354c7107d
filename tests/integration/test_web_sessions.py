"""Sessions in the API: a room's sessions, each session's transcript, windows, events, metrics and report
page, and the report's events token. Flask's test client over a real SQLite store, and the real
gunicorn (``GunicornServer``) for the streams a report page follows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from connectors.store import Store
from harness.gunicorn import GunicornServer, SSEClient, parse_blocks
from quantcoach.wire import validate
from tests.support.records import metrics, session_event, transcript, window
from tests.support.web import AUTH, error_code, make_app
from web.auth import EventTokens

ROOM = "mock-1"
OLD, NEW = "RM_first", "RM_second"


def interview(session: str, *, ended: bool) -> list[dict[str, Any]]:
    records = [session_event(session, "started", room=ROOM)]
    records += [transcript(session, 0, 1.0, room=ROOM), transcript(session, 1, 4.0, "candidate", room=ROOM)]
    records += [window(session, 0, room=ROOM), metrics(session, 5.0, room=ROOM)]
    if ended:
        records += [metrics(session, 6.0, final=True, room=ROOM), session_event(session, "ended", room=ROOM)]
    return records


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upsert(interview(OLD, ended=True))
    s.upsert(interview(NEW, ended=False))
    yield s
    s.close()


@pytest.fixture
def client(store: Store, db_url: str) -> FlaskClient:
    return make_app(db_url).test_client()


def report_data(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert found, "no embedded report data"
    return json.loads(found.group(1))


def test_a_rooms_sessions_newest_first(client: FlaskClient) -> None:
    resp = client.get(f"/rooms/{ROOM}/sessions", headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json() == {
        "room": ROOM,
        "sessions": [
            {
                "session_id": NEW,
                "started_at": "2026-01-02T03:00:00Z",
                "ended_at": None,
                "transcripts": 2,
                "windows": 1,
            },
            {
                "session_id": OLD,
                "started_at": "2026-01-02T03:00:00Z",
                "ended_at": "2026-01-02T03:00:00.000Z",
                "transcripts": 2,
                "windows": 1,
            },
        ],
    }
    assert error_code(client.get("/rooms/nobody/sessions", headers=AUTH)) == "room_not_found"
    assert error_code(client.get("/rooms/-bad/sessions", headers=AUTH)) == "invalid_room_name"


def test_each_session_keeps_its_own_records(client: FlaskClient, store: Store) -> None:
    for sid in (OLD, NEW):
        items = client.get(f"/sessions/{sid}/transcript", headers=AUTH).get_json()
        assert items == store.transcripts(sid) and [t["utterance_id"] for t in items] == [
            f"{sid}:iv-7:0",
            f"{sid}:cand-3:1",
        ]
        windows = client.get(f"/sessions/{sid}/windows", headers=AUTH).get_json()
        assert [w["window_id"] for w in windows] == [f"{sid}:0"]
        for record in [*items, *windows]:
            validate(record)
    resp = client.get(f"/sessions/{OLD}/transcript?format=text&since=2", headers=AUTH)
    assert resp.get_data(as_text=True) == "Candidate: sentence 1\n"
    vtt = client.get(f"/sessions/{OLD}/transcript?format=vtt", headers=AUTH)
    assert vtt.mimetype == "text/vtt" and "<v Riley>sentence 1" in vtt.get_data(as_text=True)
    srt = client.get(f"/sessions/{OLD}/transcript?format=srt", headers=AUTH)
    assert srt.mimetype == "application/x-subrip" and "Morgan: sentence 0" in srt.get_data(as_text=True)


def test_metrics_are_the_latest(client: FlaskClient, store: Store) -> None:
    done = client.get(f"/sessions/{OLD}/metrics", headers=AUTH).get_json()
    assert done == store.metrics(OLD) and done["final"] and done["media_s"] == 6.0
    validate(done)
    assert client.get(f"/sessions/{NEW}/metrics", headers=AUTH).get_json()["final"] is False
    store.upsert([transcript("RM_quiet", 0, 0.0, room=ROOM)])
    resp = client.get("/sessions/RM_quiet/metrics", headers=AUTH)
    assert resp.status_code == 404 and error_code(resp) == "metrics_not_found"


@pytest.mark.parametrize("path", ["transcript", "windows", "events", "metrics", "report"])
def test_unknown_or_malformed_sessions(client: FlaskClient, path: str) -> None:
    resp = client.get(f"/sessions/RM_nobody/{path}", headers=AUTH)
    assert resp.status_code == 404 and error_code(resp) == "session_not_found"
    for bad in ("a.b", "x" * 65, "sp%20ace", "col:on"):
        resp = client.get(f"/sessions/{bad}/{path}", headers=AUTH)
        assert resp.status_code == 400 and error_code(resp) == "invalid_session_id", bad
    assert error_code(client.get(f"/sessions/{OLD}/{path}")) == "missing_api_key"


def test_event_stream_has_all_four_kinds_and_starts_after(client: FlaskClient, store: Store) -> None:
    body = client.get(f"/sessions/{OLD}/events", headers=AUTH).get_data(as_text=True)
    events = [b for b in parse_blocks(body) if b.event]
    stored = store.events_after(OLD, 0)
    assert [(e.id, e.event, e.json()) for e in events] == [(s.position, s.kind, s.record) for s in stored]
    assert [e.event for e in events] == [
        "session",
        "transcript",
        "transcript",
        "window",
        "metrics",
        "session",
    ]
    assert events[4].json()["final"]  # the latest metrics only (the non-final one was replaced)
    for e in events:
        validate(e.json())
    # `after` starts later; Last-Event-ID, when sent, wins over it
    later = client.get(f"/sessions/{OLD}/events?after={events[2].id}", headers=AUTH).get_data(as_text=True)
    assert [b.id for b in parse_blocks(later) if b.event] == [e.id for e in events[3:]]
    header = {**AUTH, "Last-Event-ID": str(events[4].id)}
    both = client.get(f"/sessions/{OLD}/events?after=0", headers=header).get_data(as_text=True)
    assert [b.id for b in parse_blocks(both) if b.event] == [events[5].id]
    for bad in ("-1", "x", "1.5", "1" * 19):
        resp = client.get(f"/sessions/{OLD}/events?after={bad}", headers=AUTH)
        assert resp.status_code == 400 and error_code(resp) == "invalid_after"


def test_report_of_an_ended_session_is_complete_and_not_live(client: FlaskClient, store: Store) -> None:
    resp = client.get(f"/sessions/{OLD}/report", headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert "connect-src 'self'" in resp.headers["Content-Security-Policy"]
    data = report_data(resp.get_data(as_text=True))
    assert data["live"] is False and data["events_url"] is None
    assert (data["room"], data["session_id"]) == (ROOM, OLD)
    assert data["transcripts"] == store.transcripts(OLD) and data["windows"] == store.windows(OLD)
    assert data["metrics"] == store.metrics(OLD)
    assert [p["identity"] for p in data["participants"]] == ["iv-7", "cand-3"]


def test_report_of_a_live_session_follows_its_stream_with_a_token(client: FlaskClient, store: Store) -> None:
    data = report_data(client.get(f"/sessions/{NEW}/report", headers=AUTH).get_data(as_text=True))
    assert data["live"] is True
    url = data["events_url"]
    last = store.events_after(NEW, 0)[-1].position
    assert url.startswith(f"/sessions/{NEW}/events?") and f"after={last}" in url and "token=" in url
    store.upsert([transcript(NEW, 2, 8.0, room=ROOM)])
    body = client.get(url).get_data(as_text=True)  # no Authorization header: the token lets it in
    assert [b.json()["utterance_id"] for b in parse_blocks(body) if b.event] == [f"{NEW}:iv-7:2"]

    token = re.search(r"token=([^&]+)", url).group(1)
    other = client.get(f"/sessions/{OLD}/events?token={token}")  # another session's stream
    assert other.status_code == 401 and error_code(other) == "invalid_token"
    forged = client.get(f"/sessions/{NEW}/events?token={token[:-2]}xx")
    assert forged.status_code == 401 and error_code(forged) == "invalid_token"
    elsewhere = client.get(f"/sessions/{NEW}/transcript?token={token}")  # the events route only
    assert elsewhere.status_code == 401 and error_code(elsewhere) == "missing_api_key"
    room = client.get(f"/rooms/{ROOM}/events?token={token}")
    assert room.status_code == 401 and error_code(room) == "missing_api_key"


def test_events_tokens_expire_and_are_per_session() -> None:
    now = [1_000_000.0]
    tokens = EventTokens("secret", 60, clock=lambda: now[0])
    token = tokens.mint("RM_a")
    assert tokens.check(token, "RM_a") and not tokens.check(token, "RM_b")
    now[0] += 60
    assert tokens.check(token, "RM_a")
    now[0] += 1
    assert not tokens.check(token, "RM_a")  # expired
    assert not EventTokens("other", 60, clock=lambda: now[0]).check(tokens.mint("RM_a"), "RM_a")
    assert not tokens.check("", "RM_a") and not tokens.check("9" * 40 + ".x", "RM_a")
    assert not EventTokens("", 60).check(token, "RM_a")  # no key: no token is good


def test_report_page_under_gunicorn_goes_live_over_the_token_stream(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    writer = Store(url)
    writer.upsert(interview(NEW, ended=False))
    server = GunicornServer(url, tmp_path)
    try:
        page = requests.get(f"{server.base}/sessions/{NEW}/report", headers=AUTH, timeout=10)
        data = report_data(page.text)
        assert data["live"] and len(data["transcripts"]) == 2
        # what the page's EventSource does: the embedded URL, no Authorization header
        with SSEClient(server.base + data["events_url"], auth=False) as sse:
            assert sse.resp.status_code == 200
            assert sse.until_idle() == []  # the page holds everything up to `after`
            writer.upsert([transcript(NEW, 2, 8.0, room=ROOM), window(NEW, 1, room=ROOM)])
            writer.upsert([metrics(NEW, 9.0, final=True, room=ROOM), session_event(NEW, "ended", room=ROOM)])
            got = sse.events(4)
        assert [b.event for b in got] == ["transcript", "window", "metrics", "session"]
        assert got[-1].json()["event"] == "ended"
        for b in got:
            validate(b.json())
        done = report_data(
            requests.get(f"{server.base}/sessions/{NEW}/report", headers=AUTH, timeout=10).text
        )
        assert done["live"] is False and len(done["transcripts"]) == 3
    finally:
        server.stop()
        writer.close()
    assert "token=" not in server.log()  # the access log shows paths without their query
