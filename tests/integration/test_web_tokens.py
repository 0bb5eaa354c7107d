"""POST /tokens/generate: grants per role, the role attribute, TTL, and every input error."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import jwt
import pytest
from flask.testing import FlaskClient
from livekit.api import TokenVerifier

from connectors.livekit.api import grants_for
from quantcoach.roles import ROLES
from tests.support.twirp import API_KEY, API_SECRET, TEST_API_KEY, TwirpRoomServer
from web.app import create_app

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}

# role -> (hidden, agent, can_publish, can_subscribe, can_publish_data): the README's table
EXPECTED = {
    "interviewer": (None, None, True, True, True),
    "candidate": (None, None, True, True, True),
    "agent": (True, True, False, True, True),  # data only: the live captions
    "participant": (None, None, False, True, False),
}


@pytest.fixture(scope="module")
def server() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


@pytest.fixture
def client(server: TwirpRoomServer) -> FlaskClient:
    return create_app(server.settings(token_ttl_s=600)).test_client()


def generate(client: FlaskClient, body: object, headers: dict[str, str] | None = None):
    return client.post("/tokens/generate", json=body, headers=headers or AUTH)


def test_every_role_has_grants() -> None:
    assert set(ROLES) == set(EXPECTED)


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_token_grants_per_role(client: FlaskClient, role: str) -> None:
    body = {"room_name": "mock-42", "participant_identity": "user.1", "participant_name": "Riley"}
    resp = generate(client, {**body, "role": role})
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["room_name"] == "mock-42" and data["participant_identity"] == "user.1"
    assert data["url"].startswith("http://127.0.0.1:")

    claims = TokenVerifier(API_KEY, API_SECRET).verify(data["token"])
    video = claims.video
    assert claims.identity == "user.1" and claims.name == "Riley"
    assert claims.attributes == {"role": role}
    assert json.loads(claims.metadata) == {"role": role}
    assert video.room_join is True and video.room == "mock-42"
    got = (video.hidden, video.agent, video.can_publish, video.can_subscribe, video.can_publish_data)
    assert got == EXPECTED[role]
    # No role may administer rooms.
    assert not (video.room_admin or video.room_create or video.room_list or video.room_record)


def test_grants_for_unknown_role() -> None:
    with pytest.raises(ValueError):
        grants_for("admin", "r")


def test_default_role_is_participant_and_name_defaults_to_identity(client: FlaskClient) -> None:
    resp = generate(client, {"room_name": "r1", "participant_identity": "viewer-9"})
    assert resp.status_code == 200
    claims = TokenVerifier(API_KEY, API_SECRET).verify(resp.get_json()["token"])
    assert claims.attributes == {"role": "participant"}
    assert claims.name == "viewer-9"
    assert claims.video.can_publish is False


def test_ttl_from_settings(client: FlaskClient) -> None:
    token = generate(client, {"room_name": "r1", "participant_identity": "a"}).get_json()["token"]
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert 600 - 5 <= exp - time.time() <= 600 + 5


def test_wrong_secret_does_not_verify(client: FlaskClient) -> None:
    token = generate(client, {"room_name": "r1", "participant_identity": "a"}).get_json()["token"]
    with pytest.raises(Exception):  # noqa: B017 - PyJWT's InvalidSignatureError
        TokenVerifier(API_KEY, "another-secret-another-secret-another-secret").verify(token)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": "", "participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": "a/b", "participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": "a:b", "participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": "x" * 65, "participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": "-lead", "participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": 7, "participant_identity": "a"}, "invalid_room_name"),
        ({"room_name": "r"}, "invalid_identity"),
        ({"room_name": "r", "participant_identity": "a/b"}, "invalid_identity"),
        ({"room_name": "r", "participant_identity": "é"}, "invalid_identity"),
        ({"room_name": "r", "participant_identity": "a" * 129}, "invalid_identity"),
        ({"room_name": "r", "participant_identity": "a", "participant_name": "x\n"}, "invalid_name"),
        ({"room_name": "r", "participant_identity": "a", "participant_name": "x" * 129}, "invalid_name"),
        ({"room_name": "r", "participant_identity": "a", "participant_name": 3}, "invalid_name"),
        ({"room_name": "r", "participant_identity": "a", "role": "admin"}, "invalid_role"),
        ({"room_name": "r", "participant_identity": "a", "role": ["agent"]}, "invalid_role"),
        ({"room_name": "r", "participant_identity": "a", "role": None}, "invalid_role"),
        ({"room_name": None, "participant_identity": "a"}, "invalid_room_name"),
        ([1, 2], "invalid_body"),
        ("text", "invalid_body"),
    ],
)
def test_invalid_input_is_400(client: FlaskClient, body: object, code: str) -> None:
    resp = generate(client, body)
    assert resp.status_code == 400
    assert resp.get_json() == {"error": {"code": code, "message": resp.get_json()["error"]["message"]}}


def test_null_display_name_is_the_identity(client: FlaskClient) -> None:
    resp = generate(client, {"room_name": "r", "participant_identity": "a", "participant_name": None})
    assert resp.status_code == 200
    assert TokenVerifier(API_KEY, API_SECRET).verify(resp.get_json()["token"]).name == "a"


def test_unicode_display_name_is_fine(client: FlaskClient) -> None:
    resp = generate(client, {"room_name": "r", "participant_identity": "a", "participant_name": "Zoë 李"})
    assert resp.status_code == 200
    assert TokenVerifier(API_KEY, API_SECRET).verify(resp.get_json()["token"]).name == "Zoë 李"


def test_bad_json_and_media_type(client: FlaskClient) -> None:
    resp = client.post("/tokens/generate", data="{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_json"
    resp = client.post("/tokens/generate", data="room_name=r", headers={**AUTH, "Content-Type": "text/plain"})
    assert resp.status_code == 415 and resp.get_json()["error"]["code"] == "unsupported_media_type"
    resp = client.post("/tokens/generate", headers=AUTH)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_body"


def test_unconfigured_livekit_is_503(server: TwirpRoomServer) -> None:
    client = create_app(server.settings(livekit_url="")).test_client()
    resp = generate(client, {"room_name": "r", "participant_identity": "a"})
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "livekit_not_configured"
