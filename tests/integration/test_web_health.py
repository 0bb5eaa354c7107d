"""GET / and GET /health: configured, reachable, degraded, and the probe cache."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from quantcoach.settings import Secret
from tests.support.twirp import TwirpRoomServer
from web.app import create_app
from web.openapi import version

KEYS = {"status", "service", "version", "livekit_configured", "livekit_reachable", "kafka_configured"}


@pytest.fixture
def server() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


def test_healthy(server: TwirpRoomServer) -> None:
    client = create_app(server.settings(kafka_bootstrap_servers="127.0.0.1:9092")).test_client()
    for path in ("/", "/health"):
        data = client.get(path).get_json()
        assert set(data) == KEYS
        assert data["status"] == "ok" and data["version"] == version() != "unknown"
        assert data["livekit_configured"] is True and data["livekit_reachable"] is True
        assert data["kafka_configured"] is True


def test_unconfigured_starts_and_says_so(server: TwirpRoomServer) -> None:
    client = create_app(server.settings(livekit_url="", livekit_api_key=Secret(""))).test_client()
    resp = client.get("/health")
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["status"] == "degraded"
    assert data["livekit_configured"] is False and data["livekit_reachable"] is False
    assert data["kafka_configured"] is False


def test_unreachable_is_degraded(server: TwirpRoomServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = create_app(server.settings(livekit_url=f"ws://127.0.0.1:{port}")).test_client()
    data = client.get("/health").get_json()
    assert data["status"] == "degraded" and data["livekit_reachable"] is False
    assert data["livekit_configured"] is True


def test_probe_is_cached(server: TwirpRoomServer) -> None:
    client = create_app(server.settings()).test_client()
    for _ in range(5):
        assert client.get("/health").get_json()["livekit_reachable"] is True
    assert [c.method for c in server.state.calls] == ["ListRooms"]
