"""The body limit for chunked requests too.

Werkzeug refuses a ``Content-Length`` over ``MAX_CONTENT_LENGTH`` with 413, but a chunked body (no
length) is only wrapped in a stream that stops at the limit: the view reads a truncated body, and a
JSON object padded past the limit would still be served. This hook reads a chunked body whole, up to the
limit plus one byte, before any view runs: over the limit is 413 (the JSON error shape); within it, the
view reads the bytes it was sent, with their length set.
"""

from __future__ import annotations

import io

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge


def _chunked_body_limit() -> None:
    if (
        request.content_length is not None
        or "chunked" not in request.headers.get("Transfer-Encoding", "").lower()
    ):
        return
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is None:
        return
    raw = request.environ["wsgi.input"]
    data = raw.read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge(f"request body over {limit} bytes")
    request.environ["wsgi.input"] = io.BytesIO(data)
    request.environ["CONTENT_LENGTH"] = str(len(data))


def install_body_limit(app: Flask) -> None:
    """Run before every other hook (nothing may read the body first)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _chunked_body_limit)
