"""Rooms against the local Twirp RoomService: create, list, participants, delete, and LiveKit failures."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from livekit.api import TokenVerifier

from tests.support.twirp import API_KEY, API_SECRET, TEST_API_KEY, TwirpRoomServer
from web.app import create_app

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture
def server() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


@pytest.fixture
def client(server: TwirpRoomServer) -> Iterator[FlaskClient]:
    app = create_app(server.settings(agent_identity="qc-agent"))
    yield app.test_client()
    app.extensions["quantcoach"].rooms.close()


def verify(token: str):
    return TokenVerifier(API_KEY, API_SECRET).verify(token)


def test_create_with_generated_name_and_three_tokens(client: FlaskClient, server: TwirpRoomServer) -> None:
    resp = client.post("/rooms/create", json={}, headers=AUTH)
    assert resp.status_code == 200
    data = resp.get_json()
    assert set(data) == {
        "sid",
        "name",
        "max_participants",
        "creation_time",
        "interviewer_token",
        "candidate_token",
        "agent_token",
        "url",
    }
    assert re.fullmatch(r"interview-\d{8}-\d{6}-[0-9a-f]{6}", data["name"])
    assert data["sid"].startswith("RM_") and data["max_participants"] == 10
    assert isinstance(data["creation_time"], int) and data["url"] == server.url
    assert data["name"] in server.state.rooms

    tokens = {role: verify(data[f"{role}_token"]) for role in ("interviewer", "candidate", "agent")}
    for role, claims in tokens.items():
        assert claims.attributes == {"role": role}
        assert claims.video.room == data["name"] and claims.video.room_join
    assert tokens["agent"].identity == "qc-agent"
    assert tokens["agent"].video.hidden and tokens["agent"].video.agent
    agent = tokens["agent"].video
    assert not agent.can_publish and agent.can_publish_data and agent.hidden  # captions, never media
    assert tokens["interviewer"].video.can_publish and tokens["candidate"].video.can_publish
    assert tokens["interviewer"].identity != tokens["candidate"].identity


def test_create_without_body(client: FlaskClient) -> None:
    resp = client.post("/rooms/create", headers=AUTH)
    assert resp.status_code == 200


def test_create_named_passes_options_and_conflicts(client: FlaskClient, server: TwirpRoomServer) -> None:
    body = {"room_name": "mock-42", "max_participants": 3, "empty_timeout": 120}
    resp = client.post("/rooms/create", json=body, headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json()["name"] == "mock-42" and resp.get_json()["max_participants"] == 3
    room = server.state.rooms["mock-42"]
    assert (room.max_participants, room.empty_timeout) == (3, 120)

    again = client.post("/rooms/create", json={"room_name": "mock-42"}, headers=AUTH)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "room_exists"


@pytest.mark.parametrize(
    "body",
    [
        {"room_name": "bad name"},
        {"room_name": None, "max_participants": 0},
        {"max_participants": None},
        {"empty_timeout": None},
        {"max_participants": 1001},
        {"max_participants": "10"},
        {"max_participants": True},
        {"max_participants": 2.5},
        {"empty_timeout": -1},
        {"empty_timeout": 86401},
    ],
)
def test_create_invalid_input(client: FlaskClient, server: TwirpRoomServer, body: dict) -> None:
    resp = client.post("/rooms/create", json=body, headers=AUTH)
    assert resp.status_code == 400
    assert set(resp.get_json()["error"]) == {"code", "message"}
    assert not server.state.rooms


def test_errors_name_the_field_and_what_it_accepts(client: FlaskClient) -> None:
    resp = client.post("/rooms/create", json={"max_participants": "10"}, headers=AUTH)
    assert resp.get_json()["error"] == {
        "code": "invalid_max_participants",
        "message": "max_participants: an integer from 1 to 1000",
    }
    resp = client.post("/rooms/create", json={"room_name": "create"}, headers=AUTH)
    assert resp.get_json()["error"] == {
        "code": "invalid_room_name",
        "message": "room_name: 'create' is reserved",
    }


def test_an_integral_json_number_is_an_integer(client: FlaskClient) -> None:
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema's "integer", as /openapi.json says).
    resp = client.post("/rooms/create", json={"room_name": "int-3", "max_participants": 3.0}, headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["max_participants"] == 3


def test_null_room_name_is_generated(client: FlaskClient) -> None:
    resp = client.post("/rooms/create", json={"room_name": None}, headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["name"].startswith("interview-")


def test_create_is_not_a_room_name(client: FlaskClient) -> None:
    resp = client.post("/rooms/create", json={"room_name": "create"}, headers=AUTH)
    assert resp.status_code == 400 and "reserved" in resp.get_json()["error"]["message"]
    resp = client.delete("/rooms/create", headers=AUTH)
    assert resp.status_code == 405 and set(resp.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_room_service_saw_the_right_grants(client: FlaskClient, server: TwirpRoomServer) -> None:
    client.post("/rooms/create", json={"room_name": "g1"}, headers=AUTH)
    client.get("/rooms/g1/participants", headers=AUTH)
    client.delete("/rooms/g1", headers=AUTH)
    seen = {(c.method, c.status) for c in server.state.calls}
    assert seen == {("ListRooms", 200), ("CreateRoom", 200), ("ListParticipants", 200), ("DeleteRoom", 200)}
    for call in server.state.calls:
        assert call.content_type == "application/protobuf"  # what livekit-api sends
        v = call.claims.video
        if call.method == "ListParticipants":
            assert v.room_admin and v.room == "g1"
        elif call.method == "ListRooms":
            assert v.room_list
        else:
            assert v.room_create


def test_list_rooms(client: FlaskClient, server: TwirpRoomServer) -> None:
    assert client.get("/rooms", headers=AUTH).get_json() == []
    for name in ("r1", "r2"):
        client.post("/rooms/create", json={"room_name": name}, headers=AUTH)
    server.add_participant("r2", "cand-3", "Riley", "candidate")
    rooms = client.get("/rooms", headers=AUTH).get_json()
    assert [(r["name"], r["num_participants"]) for r in rooms] == [("r1", 0), ("r2", 1)]
    assert all(set(r) == {"sid", "name", "num_participants", "creation_time"} for r in rooms)


def test_participants(client: FlaskClient, server: TwirpRoomServer) -> None:
    client.post("/rooms/create", json={"room_name": "mock-7"}, headers=AUTH)
    server.add_participant("mock-7", "iv-7", "Morgan", "interviewer")
    server.add_participant("mock-7", "viewer")
    resp = client.get("/rooms/mock-7/participants", headers=AUTH)
    assert resp.status_code == 200
    got = [{k: p[k] for k in ("identity", "name", "state", "role")} for p in resp.get_json()]
    assert got == [
        {"identity": "iv-7", "name": "Morgan", "state": "ACTIVE", "role": "interviewer"},
        {"identity": "viewer", "name": "viewer", "state": "ACTIVE", "role": ""},
    ]
    assert all(p["sid"].startswith("PA_") for p in resp.get_json())


def test_unknown_room_is_404(client: FlaskClient) -> None:
    for resp in (
        client.get("/rooms/ghost/participants", headers=AUTH),
        client.delete("/rooms/ghost", headers=AUTH),
    ):
        assert resp.status_code == 404
        assert resp.get_json()["error"]["code"] == "room_not_found"


def test_invalid_room_in_path_is_400(client: FlaskClient) -> None:
    for resp in (
        client.get("/rooms/a:b/participants", headers=AUTH),
        client.delete("/rooms/.x", headers=AUTH),
    ):
        assert resp.status_code == 400
        assert resp.get_json()["error"]["code"] == "invalid_room_name"


def test_delete(client: FlaskClient, server: TwirpRoomServer) -> None:
    client.post("/rooms/create", json={"room_name": "bye"}, headers=AUTH)
    resp = client.delete("/rooms/bye", headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "success", "message": "Room bye deleted"}
    assert "bye" not in server.state.rooms


def test_room_deleted_between_check_and_call_is_404(client: FlaskClient, server: TwirpRoomServer) -> None:
    client.post("/rooms/create", json={"room_name": "race"}, headers=AUTH)
    server.state.fail_next["DeleteRoom"] = "not_found"
    resp = client.delete("/rooms/race", headers=AUTH)
    assert resp.status_code == 404


def test_turn_password_never_leaves(client: FlaskClient) -> None:
    bodies = [
        client.post("/rooms/create", json={"room_name": "t1"}, headers=AUTH).get_data(as_text=True),
        client.get("/rooms", headers=AUTH).get_data(as_text=True),
    ]
    assert all("turn" not in b for b in bodies)


def test_livekit_5xx_is_503(client: FlaskClient, server: TwirpRoomServer) -> None:
    server.state.fail_next["ListRooms"] = "unavailable"
    resp = client.get("/rooms", headers=AUTH)
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "livekit_unavailable"
    assert client.get("/rooms", headers=AUTH).status_code == 200  # and it recovers


def test_wrong_livekit_url_path_is_502_not_404(server: TwirpRoomServer) -> None:
    # A bare 404 without LiveKit's not_found code (LIVEKIT_URL with a wrong path) is not "no such room".
    client = create_app(server.settings(livekit_url=server.url + "/wrong")).test_client()
    resp = client.get("/rooms/r/participants", headers=AUTH)
    assert resp.status_code == 502


def test_livekit_rejecting_our_credentials_is_502(server: TwirpRoomServer) -> None:
    from quantcoach.settings import Secret

    app = create_app(server.settings(livekit_api_secret=Secret("not-the-secret-not-the-secret-not-the")))
    resp = app.test_client().get("/rooms", headers=AUTH)
    assert resp.status_code == 502
    assert resp.get_json()["error"] == {"code": "livekit_rejected", "message": "LiveKit rejected the request"}
    assert server.state.calls[-1].status == 401


def test_livekit_unreachable_is_503(server: TwirpRoomServer) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(server.settings(livekit_url=f"http://127.0.0.1:{port}"))
    client = app.test_client()
    for resp in (
        client.get("/rooms", headers=AUTH),
        client.post("/rooms/create", json={}, headers=AUTH),
        client.get("/rooms/x/participants", headers=AUTH),
        client.delete("/rooms/x", headers=AUTH),
    ):
        assert resp.status_code == 503
        assert resp.get_json()["error"]["code"] == "livekit_unavailable"


def test_livekit_unconfigured_is_503(server: TwirpRoomServer) -> None:
    client = create_app(server.settings(livekit_url="")).test_client()
    for resp in (
        client.get("/rooms", headers=AUTH),
        client.post("/rooms/create", json={}, headers=AUTH),
        client.get("/rooms/x/participants", headers=AUTH),
        client.delete("/rooms/x", headers=AUTH),
    ):
        assert resp.status_code == 503
        assert resp.get_json()["error"]["code"] == "livekit_not_configured"
