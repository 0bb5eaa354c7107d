"""Helpers the web tests share: the API key the apps and servers take, the session id a room's records
get, the app over a SQLite store, the error code of an answer, and webhook signatures.

The app under real gunicorn and the SSE client are in harness/gunicorn.py (the benchmarks start them too).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from typing import Any

from flask import Flask
from livekit.api import AccessToken

from harness.gunicorn import API_KEY, AUTH
from quantcoach.settings import Secret, Settings
from tests.support import records
from tests.support.twirp import API_KEY as LIVEKIT_API_KEY
from tests.support.twirp import API_SECRET
from web.app import create_app

KEY = API_KEY
__all__ = ["AUTH", "KEY", "error_code", "make_app", "sid", "sign", "transcript", "window"]


def sid(room: str) -> str:
    """The session id these tests give a room's (first) session."""
    return "S_" + re.sub(r"[^A-Za-z0-9_-]", "_", room)[:60]


def transcript(
    room: str, n: int, start: float, speaker: str = "interviewer", session: str | None = None
) -> dict[str, Any]:
    return records.transcript(session or sid(room), n, start, speaker, room=room)


def window(room: str, seq: int, session: str | None = None) -> dict[str, Any]:
    return records.window(session or sid(room), seq, room=room)


def make_app(db_url: str, **overrides: Any) -> Flask:
    settings = Settings(**{"api_keys": Secret(KEY), "database_url": db_url, **overrides})
    config = {"SSE_POLL_S": 0.01, "SSE_KEEPALIVE_S": 0.05, "SSE_MAX_S": 0.3, "SSE_RETRY_MS": 500}
    return create_app(settings, config=config)


def error_code(resp: Any) -> str:
    assert resp.mimetype == "application/json", resp.get_data(as_text=True)
    return resp.get_json()["error"]["code"]


def sign(body: str, secret: str = API_SECRET, ttl_s: int = 300) -> str:
    """As livekit-server does: a JWT whose sha256 claim is the base64 SHA-256 of the body."""
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = AccessToken(LIVEKIT_API_KEY, secret).with_sha256(digest)
    return token.with_ttl(dt.timedelta(seconds=ttl_s)).to_jwt()
