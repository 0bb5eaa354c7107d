"""The Twirp test server itself: it must refuse what livekit-server refuses, or room tests prove little."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from livekit.api import AccessToken, VideoGrants
from livekit.protocol.room import ListRoomsResponse

from tests.support.twirp import API_KEY, API_SECRET, TwirpRoomServer

JSON = "application/json"


@pytest.fixture(scope="module")
def server() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


def bearer(grants: VideoGrants, secret: str = API_SECRET, key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {AccessToken(key, secret).with_grants(grants).to_jwt()}"}


def call(server: TwirpRoomServer, method: str, body: object, headers: dict[str, str], ctype: str = JSON):
    return requests.post(
        f"{server.url}/twirp/livekit.RoomService/{method}",
        json=body,
        headers={**headers, "Content-Type": ctype},
        timeout=5,
    )


def test_json_encoding_round_trip(server: TwirpRoomServer) -> None:
    create = bearer(VideoGrants(room_create=True))
    resp = call(server, "CreateRoom", {"name": "j1", "maxParticipants": 4}, create)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == JSON
    room = resp.json()
    assert room["name"] == "j1" and room["maxParticipants"] == 4
    assert isinstance(room["creationTime"], str)  # int64 is a string in protobuf JSON

    listed = call(server, "ListRooms", {"names": ["j1"]}, bearer(VideoGrants(room_list=True)))
    assert [r["name"] for r in listed.json()["rooms"]] == ["j1"]


def test_protobuf_encoding(server: TwirpRoomServer) -> None:
    resp = requests.post(
        f"{server.url}/twirp/livekit.RoomService/ListRooms",
        data=b"",
        headers={**bearer(VideoGrants(room_list=True)), "Content-Type": "application/protobuf"},
        timeout=5,
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/protobuf"
    ListRoomsResponse.FromString(resp.content)


def test_missing_or_bad_token_is_unauthenticated(server: TwirpRoomServer) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        bearer(VideoGrants(room_list=True), secret="wrong-secret-wrong-secret-wrong-secret"),
        bearer(VideoGrants(room_list=True), key="APIother"),
    ):
        resp = call(server, "ListRooms", {}, headers)
        assert resp.status_code == 401
        assert resp.json()["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("method", "body", "grants"),
    [
        ("CreateRoom", {"name": "x"}, VideoGrants(room_list=True)),
        ("DeleteRoom", {"room": "x"}, VideoGrants(room_list=True)),
        ("ListRooms", {}, VideoGrants(room_create=True)),
        ("ListParticipants", {"room": "x"}, VideoGrants(room_list=True)),
        ("ListParticipants", {"room": "x"}, VideoGrants(room_admin=True, room="other")),
        ("ListRooms", {}, VideoGrants(room_record=True)),
    ],
)
def test_missing_grant_is_permission_denied(
    server: TwirpRoomServer, method: str, body: dict, grants: VideoGrants
) -> None:
    resp = call(server, method, body, bearer(grants))
    assert resp.status_code == 403
    assert resp.json() == {"code": "permission_denied", "msg": "permissions denied"}


def test_bad_route_and_malformed(server: TwirpRoomServer) -> None:
    ok = bearer(VideoGrants(room_list=True))
    assert call(server, "Nope", {}, ok).json()["code"] == "bad_route"
    assert call(server, "ListRooms", {}, ok, ctype="text/plain").json()["code"] == "bad_route"
    resp = requests.post(
        f"{server.url}/twirp/livekit.RoomService/ListRooms",
        data=b"{not json",
        headers={**ok, "Content-Type": JSON},
        timeout=5,
    )
    assert resp.status_code == 400 and resp.json()["code"] == "malformed"


def test_unknown_room_is_not_found(server: TwirpRoomServer) -> None:
    resp = call(server, "DeleteRoom", {"room": "ghost"}, bearer(VideoGrants(room_create=True)))
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"
