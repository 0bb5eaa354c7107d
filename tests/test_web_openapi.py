"""The OpenAPI document matches the app's routes; the docs page is self-contained."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask

from tests.twirp_server import TEST_API_KEY, TwirpRoomServer
from web.app import create_app

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    with TwirpRoomServer() as srv:
        yield create_app(srv.settings())


def test_document_paths_match_routes(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json", headers=AUTH).get_json()
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    routed = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == routed


def test_document_loads_as_openapi(app: Flask) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, headers=AUTH)
    ops = {f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()}  # Err would raise
    assert "POST /tokens/generate" in ops and "DELETE /rooms/{name}" in ops


def test_document_needs_a_key(app: Flask) -> None:
    assert app.test_client().get("/openapi.json").status_code == 401


def test_docs_page_is_self_contained(app: Flask) -> None:
    resp = app.test_client().get("/docs")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "openapi.json" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing loaded from elsewhere
    assert "connect-src 'self'" in resp.headers["Content-Security-Policy"]
