"""Fuzz the API from its own OpenAPI document (schemathesis): no 5xx, responses match the document.

The app runs against the local Twirp RoomService, so room routes do real work; every case is sent with
a valid API key (schemathesis also tries it without, expecting 401). Examples are bounded so that the
whole module stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask

from quantcoach.settings import Settings
from tests.support.twirp import TEST_API_KEY, TwirpRoomServer
from web.app import create_app
from web.openapi import build_document

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
MAX_EXAMPLES = 100


class _LateApp:
    """A WSGI app that forwards to the one the fixture builds (the schema needs an app at import)."""

    target: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.target is not None, "fuzz_app fixture not active"
        return self.target(environ, start_response)


# The document is the one /openapi.json serves (test_web_openapi checks it against the routes); it is
# loaded at import time so that pytest can parametrize by operation. Checks that re-send requests
# (e.g. without auth) use the schema's app, hence the forwarding app rather than a per-call one.
_late = _LateApp()
schema = schemathesis.openapi.from_dict(build_document(create_app(Settings())))
schema.app = _late
schema.config.generation.update(max_examples=MAX_EXAMPLES)


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[Flask]:
    with TwirpRoomServer() as srv:
        app = create_app(srv.settings(max_body_bytes=4096))
        _late.target = app
        yield app
        _late.target = None
        app.extensions["quantcoach"].rooms.close()


@schema.parametrize()
@hypothesis.settings(database=None, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_api(case: schemathesis.Case, fuzz_app: Flask) -> None:
    response = case.call_and_validate(headers=AUTH)
    assert response.status_code < 500 or response.status_code in (502, 503), response.text
