"""Who may call: API keys on every route but the public ones, and CORS for configured origins only.

Keys are compared as SHA-256 digests with ``hmac.compare_digest`` against every configured key, so the
time taken says nothing about how much of a key matched or which key it was. With no key configured
the protected routes are closed (403), never open: secure by default.

One exception, for browsers: a session's report page follows ``/sessions/<id>/events`` with an
``EventSource``, which cannot send an ``Authorization`` header. The report (fetched with an API key)
embeds an events URL carrying ``?token=<expiry>.<signature>``: an HMAC-SHA256, under a key derived
from ``REPORT_TOKEN_SECRET`` (else from the API keys), of that one session id and the expiry,
``REPORT_TOKEN_TTL_S`` ahead. It is accepted on that session's events route only (``TOKEN_ENDPOINTS``),
and only when no ``Authorization`` header is sent; anywhere else it is nothing. The access log never
shows it (it logs paths without their query).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, request

from web.errors import ApiError, error_response

#: Endpoints reachable without an API key. The webhook is authenticated by LiveKit's signed JWT
#: instead; /docs is a static shell that fetches /openapi.json with a key the reader pastes in.
PUBLIC_ENDPOINTS = frozenset({"health.root", "health.health", "webhooks.livekit_webhook", "openapi.docs"})

#: Endpoints that also take an events token (``?token=``) instead of an API key, for their session.
TOKEN_ENDPOINTS = frozenset({"sessions.session_events"})
TOKENS_EXTENSION = "quantcoach.event_tokens"  # the app's EventTokens in ``app.extensions``

_CORS_METHODS = "GET, POST, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(k) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, given: str) -> bool:
        d = _digest(given)
        ok = False
        for known in self._digests:  # no early exit: every key is compared
            ok |= hmac.compare_digest(d, known)
        return ok


class EventTokens:
    """Short-lived tokens for one session's event stream (see the module docstring)."""

    def __init__(self, secret: str, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"quantcoach events token\0" + secret.encode()).digest() if secret else b""
        self.ttl_s = ttl_s
        self._clock = clock

    @classmethod
    def from_keys(cls, secret: str, api_keys: list[str], ttl_s: int) -> EventTokens:
        """Under ``secret``, else under the API keys (a change of keys then ends the tokens)."""
        return cls(secret or "\n".join(sorted(api_keys)), ttl_s)

    def __bool__(self) -> bool:
        return bool(self._key)

    def _sign(self, session_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{session_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def mint(self, session_id: str) -> str:
        if not self:
            raise ApiError(403, "api_keys_not_configured", "this server has no API keys configured")
        expires = int(self._clock()) + self.ttl_s
        return f"{expires}.{self._sign(session_id, expires)}"

    def check(self, token: str, session_id: str) -> bool:
        expires, _, signature = token.partition(".")
        if not self or not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            return False
        good = hmac.compare_digest(self._sign(session_id, int(expires)), signature)
        return good and int(expires) >= self._clock()


def event_tokens() -> EventTokens:
    """The current app's events tokens."""
    return current_app.extensions[TOKENS_EXTENSION]


def require_api_key(keys: ApiKeys) -> None:
    """Raise 403 when the server has no keys, 401 for a missing, malformed or unknown key."""
    if not keys:
        raise ApiError(403, "api_keys_not_configured", "this server has no API keys configured")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "missing_api_key", "send the API key as 'Authorization: Bearer <key>'")
    if not keys.check(given):
        raise ApiError(401, "invalid_api_key", "invalid API key")


def install_access_control(
    app: Flask, keys: ApiKeys, cors_origins: list[str], tokens: EventTokens | None = None
) -> None:
    origins = frozenset(cors_origins)
    app.extensions[TOKENS_EXTENSION] = tokens if tokens is not None else EventTokens("", 60)

    @app.before_request
    def _preflight() -> Response | None:
        # A CORS preflight carries no credentials by design; answer it before the key check.
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = request.headers.get("Origin", "")
        if origin not in origins:
            return error_response(403, "cors_origin_forbidden", "origin not allowed")
        resp = Response(status=204)
        resp.headers["Access-Control-Allow-Methods"] = _CORS_METHODS
        resp.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
        resp.headers["Access-Control-Max-Age"] = "600"
        return resp

    @app.before_request
    def _api_key() -> None:
        if request.method == "OPTIONS" or request.endpoint in PUBLIC_ENDPOINTS:
            return
        if request.endpoint is None:
            return  # no such route: let routing answer 404/405 without revealing anything
        token = request.args.get("token")
        if (
            request.endpoint in TOKEN_ENDPOINTS
            and token is not None
            and "Authorization" not in request.headers
        ):
            session_id = str((request.view_args or {}).get("session_id", ""))
            if not event_tokens().check(token, session_id):
                raise ApiError(
                    401, "invalid_token", "the events token is invalid, expired or not this session's"
                )
            return
        require_api_key(keys)

    @app.after_request
    def _cors(resp: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None:
            resp.vary.add("Origin")
            if origin in origins:
                resp.headers["Access-Control-Allow-Origin"] = origin
        return resp
