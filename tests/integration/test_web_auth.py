"""API keys, CORS, body limits, the error shape, and secrets kept out of responses and logs."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from quantcoach.settings import Secret, Settings
from tests.support.twirp import API_SECRET, TEST_API_KEY, TwirpRoomServer
from web.app import create_app
from web.auth import PUBLIC_ENDPOINTS, ApiKeys

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
ORIGIN = "https://app.quantcoach.example"


@pytest.fixture(scope="module")
def server() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


@pytest.fixture
def app(server: TwirpRoomServer) -> Flask:
    return create_app(server.settings(cors_origins=f"{ORIGIN}, http://localhost:3000", max_body_bytes=1024))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def protected_routes(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint == "static":
            continue
        path = re.sub(r"<[^>]+>", "mock-1", rule.rule)
        out += [(m, path) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


def test_every_route_but_the_public_ones_needs_a_key(app: Flask, client: FlaskClient) -> None:
    routes = protected_routes(app)
    assert {p for _, p in routes} == {
        "/rooms/create",
        "/tokens/generate",
        "/rooms",
        "/rooms/mock-1/participants",
        "/rooms/mock-1",
        "/rooms/mock-1/transcript",
        "/rooms/mock-1/windows",
        "/rooms/mock-1/events",
        "/rooms/mock-1/sessions",
        "/sessions/mock-1/transcript",
        "/sessions/mock-1/windows",
        "/sessions/mock-1/events",
        "/sessions/mock-1/metrics",
        "/sessions/mock-1/report",
        "/openapi.json",
    }
    for method, path in routes:
        for headers, code in (
            ({}, "missing_api_key"),
            ({"Authorization": "Bearer nope"}, "invalid_api_key"),
            ({"Authorization": f"Basic {TEST_API_KEY}"}, "missing_api_key"),
            ({"Authorization": TEST_API_KEY}, "missing_api_key"),
            ({"Authorization": f"Bearer {TEST_API_KEY}x"}, "invalid_api_key"),
        ):
            resp = client.open(path, method=method, headers=headers, json={})
            assert resp.status_code == 401, (method, path, headers)
            assert resp.get_json()["error"]["code"] == code
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_public_routes_need_no_key(client: FlaskClient) -> None:
    for path in ("/", "/health", "/docs"):
        assert client.get(path).status_code == 200
    assert client.post("/livekit/webhook", data="{}").status_code == 401  # signature, not API key


def test_any_configured_key_works_and_scheme_is_case_insensitive(server: TwirpRoomServer) -> None:
    client = create_app(server.settings(api_keys=Secret("k-one, k-two"))).test_client()
    for auth in ("Bearer k-one", "Bearer k-two", "bearer k-two"):
        assert client.get("/rooms", headers={"Authorization": auth}).status_code == 200
    assert client.get("/rooms", headers={"Authorization": "Bearer k-one,k-two"}).status_code == 401


def test_no_keys_configured_closes_protected_routes(server: TwirpRoomServer) -> None:
    client = create_app(server.settings(api_keys=Secret(""))).test_client()
    resp = client.get("/rooms", headers={"Authorization": "Bearer "})
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "api_keys_not_configured"
    assert client.get("/health").status_code == 200


def test_api_keys_compare() -> None:
    keys = ApiKeys(["alpha", "beta"])
    assert keys.check("alpha") and keys.check("beta")
    assert not keys.check("alph") and not keys.check("alphaa") and not keys.check("")
    assert not ApiKeys([])


def test_cors_allowed_origin(client: FlaskClient) -> None:
    resp = client.get("/rooms", headers={**AUTH, "Origin": ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in resp.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in resp.headers


def test_cors_other_origin_gets_no_grant(client: FlaskClient) -> None:
    resp = client.get("/health", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_preflight(client: FlaskClient) -> None:
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    resp = client.options("/rooms/create", headers={**pre, "Origin": "http://localhost:3000"})
    assert resp.status_code == 204  # no API key on a preflight
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]

    resp = client.options("/rooms/create", headers={**pre, "Origin": "https://evil.example"})
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "cors_origin_forbidden"
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_cors_nothing_allowed_by_default(server: TwirpRoomServer) -> None:
    client = create_app(server.settings()).test_client()
    resp = client.get("/health", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_body_limit(client: FlaskClient) -> None:
    big = {"room_name": "r", "participant_identity": "a", "participant_name": "x" * 2000}
    resp = client.post("/tokens/generate", json=big, headers=AUTH)
    assert resp.status_code == 413
    assert resp.get_json() == {"error": {"code": "body_too_large", "message": "request body too large"}}
    body = json.dumps(big)
    resp = client.post("/livekit/webhook", data=body, headers={"Authorization": "x"})
    assert resp.status_code == 413


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    resp = client.get("/nope", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    resp = client.put("/rooms", headers=AUTH)
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


def test_unexpected_errors_are_generic_500(server: TwirpRoomServer, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def list_rooms(self) -> None:
            raise RuntimeError("bug")

    client = create_app(server.settings(), rooms=Broken()).test_client()  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        resp = client.get("/rooms", headers=AUTH)
    assert resp.status_code == 500
    assert resp.get_json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "RuntimeError: bug" in caplog.text  # the traceback goes to the log, not to the client


def test_security_headers(client: FlaskClient) -> None:
    resp = client.post("/tokens/generate", json={"room_name": "r", "participant_identity": "a"}, headers=AUTH)
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


# --- secrets never in responses or logs ----------------------------------------------------------
LK_SECRET = API_SECRET
API_KEYS = ("qc-key-alpha-7f3a9", "qc-key-beta-c0ffee")
TOKEN_BODY = {"room_name": "sec-1", "participant_identity": "a"}


def _texts_of(resp) -> list[str]:
    texts = [resp.get_data(as_text=True), "\n".join(f"{k}: {v}" for k, v in resp.headers.items())]
    # JWTs in a response: their payloads, decoded, must not hold a secret either.
    for jwt in re.findall(r"eyJ[\w-]+\.([\w-]+)\.[\w-]+", texts[0]):
        texts.append(base64.urlsafe_b64decode(jwt + "=" * (-len(jwt) % 4)).decode())
    return texts


def test_secrets_never_in_responses_or_logs(
    server: TwirpRoomServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = server.settings(api_keys=Secret(",".join(API_KEYS)), log_level="DEBUG")
    wrong = server.settings(livekit_api_secret=Secret("wrong-" + LK_SECRET), api_keys=Secret(API_KEYS[0]))
    auth = {"Authorization": f"Bearer {API_KEYS[1]}"}
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        client = create_app(settings).test_client()
        calls = [client.get("/"), client.get("/health")]
        server.state.fail_next["ListRooms"] = "unavailable"
        calls += [
            client.get("/rooms", headers=auth),  # 503 (injected)
            client.post("/rooms/create", json={"room_name": "sec-1"}, headers=auth),
            client.post("/rooms/create", json={"room_name": "sec-1"}, headers=auth),  # 409
            client.post("/rooms/create", json={"room_name": "bad/name"}, headers=auth),
            client.post("/tokens/generate", json=TOKEN_BODY, headers=auth),
            client.get("/rooms", headers=auth),
            client.get("/rooms/sec-1/participants", headers=auth),
            client.delete("/rooms/sec-1", headers=auth),
            client.get("/rooms", headers={"Authorization": "Bearer wrong"}),
            client.get("/openapi.json", headers=auth),
            client.post("/livekit/webhook", data="{}", headers={"Authorization": "bad"}),
            create_app(wrong).test_client().get("/rooms", headers={"Authorization": f"Bearer {API_KEYS[0]}"}),
        ]
        for resp in calls:
            assert resp.status_code < 500 or resp.status_code in (502, 503)
            texts += _texts_of(resp)
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert {r.status_code for r in calls} >= {200, 400, 401, 409, 502, 503}
    for secret in (LK_SECRET, *API_KEYS):
        for text in texts:
            assert secret not in text


def test_forwarded_for_is_trusted_only_from_the_configured_proxies() -> None:
    from flask import request

    from web.app import create_app

    seen: list[str | None] = []
    for hops in (0, 1):
        app = create_app(Settings(api_keys="k-1", trusted_proxy_hops=hops, database_url="sqlite://"))
        app.add_url_rule("/whoami", "whoami", lambda: (seen.append(request.remote_addr), "")[1])
        client = app.test_client()
        headers = {"Authorization": "Bearer k-1", "X-Forwarded-For": "203.0.113.9"}
        client.get("/whoami", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert seen == [
        "10.0.0.2",
        "203.0.113.9",
    ]  # a bare API ignores the header; behind the edge it is the client
