"""Who may call: API keys on every route but the public ones, and CORS for configured origins only.

Keys are compared as SHA-256 digests with ``hmac.compare_digest`` against every configured key, so the
time taken says nothing about how much of a key matched or which key it was. With no key configured
the protected routes are closed (403), never open: secure by default.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, request

from web.errors import ApiError, error_response

#: Endpoints reachable without an API key. The webhook is authenticated by LiveKit's signed JWT
#: instead; /docs is a static shell that fetches /openapi.json with a key the reader pastes in.
PUBLIC_ENDPOINTS = frozenset({"health.root", "health.health", "webhooks.livekit_webhook", "openapi.docs"})

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


def install_access_control(app: Flask, keys: ApiKeys, cors_origins: list[str]) -> None:
    origins = frozenset(cors_origins)

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
        require_api_key(keys)

    @app.after_request
    def _cors(resp: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None:
            resp.vary.add("Origin")
            if origin in origins:
                resp.headers["Access-Control-Allow-Origin"] = origin
        return resp
