"""The OpenAPI document matches the app's routes and comes from the models; the docs page is
self-contained."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask

from quantcoach import schemas
from quantcoach.roles import SPEAKER_ROLES
from quantcoach.settings import Settings
from quantcoach.wire import TranscriptRecord, WindowRecord
from tests.support.twirp import TEST_API_KEY, TwirpRoomServer
from web.app import create_app
from web.auth import PUBLIC_ENDPOINTS

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


def _document(app: Flask) -> dict:
    return app.test_client().get("/openapi.json", headers=AUTH).get_json()


def test_record_components_are_the_wire_models(app: Flask) -> None:
    components = _document(app)["components"]["schemas"]
    _, generated = schemas.components([TranscriptRecord, WindowRecord])
    assert {name: components[name] for name in generated} == generated
    window, transcript = components["Window"], components["Transcript"]
    assert "emitted_at" in window["required"] and window["properties"]["reason"]["enum"]
    assert transcript["properties"]["speaker"]["enum"] == list(SPEAKER_ROLES)
    assert components["Segment"]["properties"]["speaker"]["enum"] == list(SPEAKER_ROLES)


def test_public_operations_are_the_public_endpoints(app: Flask) -> None:
    doc = _document(app)
    public = {
        op["operationId"]
        for item in doc["paths"].values()
        for op in item.values()
        if op.get("security") == []
    }
    endpoint_ops = {
        rule.endpoint: app.view_functions[rule.endpoint].openapi.operation_id
        for rule in app.url_map.iter_rules()
    }
    assert public == {endpoint_ops[e] for e in PUBLIC_ENDPOINTS}


def test_no_static_files_whatever_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "secret.txt").write_text("not to be served")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        app = create_app(Settings(api_keys="k"))
        resp = app.test_client().get("/static/secret.txt", headers={"Authorization": "Bearer k"})
    finally:
        os.chdir(cwd)
    assert resp.status_code == 404 and b"not to be served" not in resp.data
    assert app.static_folder is None
