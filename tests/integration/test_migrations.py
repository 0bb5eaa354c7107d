"""Alembic migrations: a database written by the first release (tests/fixtures/store-v1.sqlite) upgrades
in place and its interview is still served; the migrated schema is the store's; several processes may
open the store at once; SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connectors.migrations import BASELINE, HEAD, current_revision, upgrade
from connectors.migrations.legacy import legacy_session_id
from connectors.store import Store, StoreUnavailable, metadata
from harness.gunicorn import GunicornServer
from quantcoach.settings import Secret, Settings
from quantcoach.wire import SESSION_ID_PATTERN, validate
from tests.support.records import transcript
from tests.support.web import AUTH, KEY
from web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "store-v1.sqlite"
ROOM = "sample-interview"
LEGACY = "legacy-sample-interview"


def v1_rows() -> list[dict[str, Any]]:
    """The fixture's rows as the first release wrote them (read with sqlite3, not with our code)."""
    conn = sqlite3.connect(FIXTURE)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM records ORDER BY position")]
    finally:
        conn.close()


@pytest.fixture
def v1_copy(tmp_path: Path) -> str:
    db = tmp_path / "store-v1.sqlite"
    shutil.copyfile(FIXTURE, db)
    return f"sqlite:///{db}"


@pytest.fixture
def pg_v1(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the baseline revision holding the fixture's rows."""
    name = f"qc_v1_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    engine = sa.create_engine(url)
    upgrade(engine, BASELINE)
    v1 = sa.Table("records", sa.MetaData(), autoload_with=engine)
    rows = [{**r, "record": json.loads(r["record"])} for r in v1_rows()]
    with engine.begin() as conn:
        conn.execute(sa.insert(v1), rows)
        conn.exec_driver_sql("SELECT setval('records_position_seq', (SELECT MAX(position) FROM records))")
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


def check_upgraded(store: Store) -> None:
    """The fixture's interview, migrated: one legacy session, every record v2 and valid, kept in place."""
    with store.engine.connect() as conn:
        assert current_revision(conn) == HEAD
    (session,) = store.sessions(ROOM)
    assert session.session_id == LEGACY == legacy_session_id(ROOM) and store.latest_session(ROOM) == LEGACY
    old = v1_rows()
    old_t = [r for r in old if r["kind"] == "transcript"]
    old_w = [r for r in old if r["kind"] == "window"]
    assert (session.transcripts, session.windows) == (len(old_t), len(old_w)) == (9, 5)
    assert session.started_at is None and session.ended_at is not None  # the first release's are over

    events = store.events_after(LEGACY, 0)
    for e in events:
        validate(e.record)
        assert e.record["session_id"] == LEGACY
    assert [(e.position, e.kind) for e in events[:-1]] == [(r["position"], r["kind"]) for r in old]
    assert events[-1].kind == "session" and events[-1].record["event"] == "ended"
    assert events[-1].record["participants"] == [
        {"identity": "iv-7", "name": "Morgan", "role": "interviewer"},
        {"identity": "cand-3", "name": "Riley", "role": "candidate"},
    ]

    transcripts = store.transcripts(LEGACY)
    by_id = {t["utterance_id"]: t for t in transcripts}
    v1_ids = sorted(json.loads(r["record"])["utterance_id"] for r in old_t)
    assert sorted(by_id) == sorted(i.replace(f"{ROOM}:", f"{LEGACY}:", 1) for i in v1_ids)
    assert all(t["language"] is None and t["confidence"] is None for t in transcripts)
    windows = store.windows(LEGACY)
    assert [w["window_id"] for w in windows] == [f"{LEGACY}:{n}" for n in range(5)]
    previous: set[str] = set()
    for w in windows:
        assert w["started_at"] is None
        for seg in w["segments"]:
            t = by_id[seg["utterance_id"]]  # matched to the session's transcript with the same bounds
            assert (t["participant"], t["start"], t["end"], t["text"]) == (
                seg["participant"],
                seg["start"],
                seg["end"],
                seg["text"],
            )
            assert seg["context"] == (seg["utterance_id"] in previous)
        previous = {s["utterance_id"] for s in w["segments"]}
        assert {p["identity"] for p in w["participants"]} >= {s["participant"] for s in w["segments"]}
    assert not any(s["context"] for s in windows[0]["segments"])
    assert any(s["context"] for s in windows[1]["segments"])


def check_schema_is_the_stores(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_the_first_releases_database_upgrades_in_place(v1_copy: str) -> None:
    store = Store(v1_copy)
    check_upgraded(store)
    check_schema_is_the_stores(store)
    before = [e.position for e in store.events_after(LEGACY, 0)]
    store.close()
    again = Store(v1_copy)  # opening again changes nothing
    assert [e.position for e in again.events_after(LEGACY, 0)] == before
    # the room's next interview is a session of its own, after the legacy one
    assert again.upsert([transcript("RM_next", 0, 0.0, room=ROOM)]) == 1
    assert [s.session_id for s in again.sessions(ROOM)] == ["RM_next", LEGACY]
    assert again.events_after("RM_next", 0)[0].position > max(before)
    again.close()


def test_the_first_releases_interview_is_still_served(v1_copy: str) -> None:
    # The API opens the store (and so upgrades it) on its first request, under the real gunicorn.
    workdir = Path(v1_copy.removeprefix("sqlite:///")).parent
    server = GunicornServer(v1_copy, workdir)
    try:
        by_room = requests.get(f"{server.base}/rooms/{ROOM}/transcript", headers=AUTH, timeout=10)
        by_session = requests.get(f"{server.base}/sessions/{LEGACY}/transcript", headers=AUTH, timeout=10)
        sessions = requests.get(f"{server.base}/rooms/{ROOM}/sessions", headers=AUTH, timeout=10).json()
        windows = requests.get(f"{server.base}/sessions/{LEGACY}/windows", headers=AUTH, timeout=10).json()
        report = requests.get(f"{server.base}/sessions/{LEGACY}/report", headers=AUTH, timeout=10)
    finally:
        server.stop()
    assert by_room.status_code == by_session.status_code == 200
    assert by_room.json() == by_session.json()
    texts = [json.loads(r["record"])["text"] for r in v1_rows() if r["kind"] == "transcript"]
    assert sorted(t["text"] for t in by_room.json()) == sorted(texts)
    for record in [*by_room.json(), *windows]:
        validate(record)
    assert [s["session_id"] for s in sessions["sessions"]] == [LEGACY]
    assert report.status_code == 200 and '"live":false' in report.text  # an ended interview


def test_the_first_releases_rows_upgrade_on_postgresql(pg_v1: str) -> None:
    store = Store(pg_v1)
    check_upgraded(store)
    check_schema_is_the_stores(store)
    top = max(e.position for e in store.events_after(LEGACY, 0))
    assert store.upsert([transcript("RM_pg", 0, 0.0, room=ROOM)]) == 1  # the sequence goes on after them
    assert store.events_after("RM_pg", 0)[0].position > top
    app = create_app(Settings(api_keys=Secret(KEY), database_url=pg_v1)).test_client()
    resp = app.get(f"/rooms/{ROOM}/sessions", headers=AUTH).get_json()
    assert [s["session_id"] for s in resp["sessions"]] == ["RM_pg", LEGACY]
    assert app.get(f"/sessions/{LEGACY}/transcript", headers=AUTH).get_json() == store.transcripts(LEGACY)
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_new_database_gets_the_head_schema(backend: str, tmp_path: Path, request: Any) -> None:
    sqlite = f"sqlite:///{tmp_path}/new.db"
    store = Store(sqlite if backend == "sqlite" else request.getfixturevalue("postgres_url"))
    check_schema_is_the_stores(store)
    store.close()


def test_processes_opening_the_store_at_once_migrate_it_once(v1_copy: str) -> None:
    code = "import sys; from connectors.store import Store; Store(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, v1_copy], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = Store(v1_copy)
    check_upgraded(store)
    store.close()


def test_a_database_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/newer.db"
    Store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreUnavailable, match="revision '9999'"):
        Store.open(url)


@pytest.mark.parametrize(
    "room",
    ["sample-interview", "mock.1", "a" * 57, "a" * 58, "x:y", "é", "a_b", "a.b", "-"],
)
def test_legacy_ids_are_session_ids_and_never_shared(room: str) -> None:
    sid = legacy_session_id(room)
    assert re.fullmatch(SESSION_ID_PATTERN, sid) and sid.startswith("legacy-")
    if re.fullmatch(r"[A-Za-z0-9_-]{1,57}", room):
        assert sid == "legacy-" + room  # readable whenever it can be
    others = ["sample-interview", "mock.1", "mock_1", "a.b", "a_b", "a" * 57, "a" * 58, "x:y", "x_y"]
    assert sum(legacy_session_id(o) == sid for o in others if o != room) == 0
