"""Bounded live streams: a cap per worker, one store poller per worker, and a send timeout.

Real gunicorn (``quantcoach web``'s run_gunicorn) and a real SQLite store written by this process.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from connectors.store import Store
from harness.gunicorn import GunicornServer, SSEClient
from tests.support.web import AUTH, KEY, sid, transcript
from web.streams import SessionPoller, StreamSlots, stream_cap


def test_stream_cap_leaves_threads_for_rest() -> None:
    assert stream_cap(0, 16) == 12 and stream_cap(0, 4) == 1 and stream_cap(0, 1) == 1
    assert stream_cap(3, 16) == 3
    slots = StreamSlots(2)
    assert slots.acquire() and slots.acquire() and not slots.acquire()
    slots.release()
    assert slots.acquire() and slots.open == 2


@dataclass(frozen=True)
class Ev:
    position: int


class CountingStore:
    def __init__(self) -> None:
        self.events = [Ev(p) for p in range(1, 11)]
        self.reads: list[tuple[str, int]] = []

    def events_after(self, session_id: str, position: int, limit: int) -> list[Ev]:
        self.reads.append((session_id, position))
        return [e for e in self.events if e.position > position][:limit]


def test_one_store_read_per_session_per_tick_whatever_the_number_of_streams() -> None:
    store = CountingStore()
    poller = SessionPoller(store.events_after, poll_s=3600)  # ticks driven by hand below
    subs = [poller.subscribe("S1", after) for after in (0, 4, 8, 10)] + [poller.subscribe("S2", 0)]
    store.reads.clear()
    poller.poll_once()
    assert sorted(store.reads) == [("S1", 0), ("S2", 0)]  # five streams, two sessions: two reads
    got = [s.events.get_nowait() if not s.events.empty() else [] for s in subs]
    assert [[e.position for e in g] for g in got[:4]] == [
        list(range(1, 11)),
        [5, 6, 7, 8, 9, 10],
        [9, 10],
        [],
    ]
    for s in subs:
        poller.unsubscribe(s)


@pytest.fixture
def writer(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


@pytest.fixture
def capped(tmp_path: Path, writer: Store) -> Iterator[GunicornServer]:
    server = GunicornServer(f"sqlite:///{tmp_path}/store.db", tmp_path, threads=4, max_streams=2)
    try:
        yield server
    finally:
        server.stop()


def test_over_the_cap_is_503_with_retry_after_and_rest_still_answers(
    capped: GunicornServer, writer: Store
) -> None:
    writer.upsert([transcript("cap-room", 0, 0.0)])
    url = f"{capped.base}/sessions/{sid('cap-room')}/events"
    with SSEClient(url) as a, SSEClient(url) as b:
        assert a.resp.status_code == 200 and b.resp.status_code == 200
        third = requests.get(url, headers=AUTH, timeout=5)
        assert third.status_code == 503 and third.headers["Retry-After"] == "5"
        assert third.json()["error"]["code"] == "too_many_streams"
        for _ in range(10):  # the threads left over serve REST at once
            began = time.monotonic()
            assert requests.get(f"{capped.base}/health", timeout=5).status_code == 200
            assert time.monotonic() - began < 1.0
    deadline = time.monotonic() + 5  # closed streams give their slots back
    while time.monotonic() < deadline:
        with SSEClient(url) as again:
            if again.resp.status_code == 200:
                break
        time.sleep(0.1)
    else:
        pytest.fail("a slot was not given back after its stream closed")


def test_a_client_that_never_reads_is_dropped_after_max_s_plus_the_send_timeout(
    tmp_path: Path, writer: Store
) -> None:
    # 40 MB of backlog: far more than loopback socket buffers hold, so the server's writes block
    text = "x" * 20_000
    writer.upsert([{**transcript("slow-room", n, float(n)), "text": text} for n in range(2000)])
    server = GunicornServer(
        f"sqlite:///{tmp_path}/store.db",
        tmp_path,
        threads=1,
        max_streams=1,
        config={"SSE_POLL_S": 0.05, "SSE_KEEPALIVE_S": 0.3, "SSE_MAX_S": 2.0, "SSE_RETRY_MS": 500,
                "SSE_SEND_TIMEOUT_S": 1.0},
    )  # fmt: skip
    try:
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(
            f"GET /sessions/{sid('slow-room')}/events HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {KEY}\r\n\r\n".encode()
        )
        began = time.monotonic()
        time.sleep(0.5)
        # one thread, held by the stream: /health waits until the server drops the non-reader
        resp = requests.get(f"{server.base}/health", timeout=15)
        held = time.monotonic() - began
        assert resp.status_code == 200
        assert held < 2.0 + 1.0 + 2.0, f"the stream held the only thread for {held:.1f} s"
        s.close()
    finally:
        server.stop()


def test_head_requests_take_no_stream_slot(capped: GunicornServer, writer: Store) -> None:
    writer.upsert([transcript("head-room", 0, 0.0)])
    url = f"{capped.base}/sessions/{sid('head-room')}/events"
    for _ in range(5):  # more than the cap of 2: a slot taken by a HEAD would never come back
        assert requests.head(url, headers=AUTH, timeout=5).status_code == 200
    with SSEClient(url) as a, SSEClient(url) as b:
        assert a.resp.status_code == 200 and b.resp.status_code == 200
