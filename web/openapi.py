"""The OpenAPI 3.1 document (``/openapi.json``, API key required) and a docs page (``/docs``).

Nothing here is written twice. Paths, methods and path parameters come from the app's own routes;
schemas come from the pydantic models that validate the input (``web.validation``), build the
responses (each blueprint) and define the wire records (``quantcoach.records``); what is left, a
summary and the error statuses of each route, is declared next to the route by ``@operation``.
apispec assembles the document. The docs page (``docs.html``) is a static shell, no CDN: its script
asks for an API key, fetches /openapi.json with it and lists the operations.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from apispec import APISpec, BasePlugin
from flask import Blueprint, Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, TypeAdapter
from werkzeug.routing import Rule

from quantcoach.schemas import RecordSchema, components
from quantcoach.wire import SessionId
from web.errors import Error
from web.validation import RoomName

bp = Blueprint("openapi", __name__)

F = TypeVar("F", bound=Callable[..., Any])

TITLE = "QuantCoach API"
DESCRIPTION = (
    "Rooms and tokens for live mock interviews, and their sessions' stored transcripts, windows, metrics "
    "and reports (read, or followed live as Server-Sent Events). A room name is not an interview: each "
    "interview is a session, and the `/rooms/{name}/...` reads answer for the room's latest one. Errors "
    'are `{"error": {"code", "message"}}`. Every route but `/`, `/health`, `/docs` and the LiveKit '
    "webhook requires `Authorization: Bearer <API key>`; a session's event stream also takes the "
    "short-lived `token` its report page embeds."
)
_ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")  # <converter(args):name> in a Flask rule
#: The schema of each URL converter's path parameter.
CONVERTERS: dict[str, Any] = {"room": RoomName, "session": SessionId}
#: Security schemes besides the API key; an operation names those it accepts as alternatives.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {"type": "http", "scheme": "bearer"},
    "eventsToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "a session's events token, as its report page embeds it in the events URL",
    },
}
ERRORS = {
    400: "invalid input",
    401: "missing or invalid API key (webhook: invalid signature)",
    403: "no API keys configured on the server, or CORS origin not allowed",
    404: "unknown room (store routes: nothing stored for the room), unknown session, or no metrics yet",
    405: "method not allowed (`/rooms/create` is a route, so no room is called `create`)",
    409: "room already exists",
    413: "request body too large",
    415: "body is not application/json",
    502: "LiveKit rejected the request (server credentials or configuration)",
    503: "LiveKit not configured or unreachable, Kafka unavailable, or the transcript store unavailable",
}
AUTH_ERRORS = (401, 403)
LIVEKIT_ERRORS = (502, 503)
STORE_ERRORS = (400, *AUTH_ERRORS, 404, 503)


@functools.cache
def version() -> str:
    try:
        return importlib.metadata.version("quantcoach")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout, not installed
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


@dataclass(frozen=True)
class Operation:
    """What a route's code does not say about it. ``ok`` and ``body`` map media types to a pydantic
    model, ``list[Model]``, a raw JSON Schema or ``None`` (no schema)."""

    operation_id: str
    summary: str
    ok: tuple[str, dict[str, Any]]
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()
    public: bool = False
    description: str | None = None
    security: tuple[str, ...] = ()  # accepted schemes, each one enough; empty: the API key


def operation(operation_id: str, summary: str, *, ok: tuple[str, Any], **more: Any) -> Callable[[F], F]:
    """Declare a view's document entry; ``ok`` is (description, model) or (description, {type: model})."""
    description, content = ok
    if not isinstance(content, dict):
        content = {"application/json": content}
    body = more.pop("body", None)
    if body is not None and not isinstance(body, dict):
        body = {"application/json": body}
    op = Operation(operation_id, summary, (description, content), body=body, **more)

    def mark(view: F) -> F:
        view.openapi = op  # type: ignore[attr-defined]
        return view

    return mark


class FlaskRules(BasePlugin):
    """apispec plugin: ``spec.path(rule=...)`` takes the path and its parameters from a Flask rule."""

    def path_helper(
        self, path: str | None = None, operations: Any = None, parameters: Any = None, *, rule: Rule, **_: Any
    ) -> str:
        for converter, arg in _ARGUMENT.findall(rule.rule):
            schema = TypeAdapter(CONVERTERS.get(converter, str)).json_schema(schema_generator=RecordSchema)
            param = {"name": arg, "in": "path", "required": True, "schema": schema}
            for op in (operations or {}).values():
                op.setdefault("parameters", []).insert(0, param)
        return _ARGUMENT.sub(lambda m: "{" + m.group(2) + "}", rule.rule)


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s documented routes."""
    routes = [
        (r, app.view_functions[r.endpoint].openapi)
        for r in app.url_map.iter_rules()
        if hasattr(app.view_functions[r.endpoint], "openapi")
    ]
    models = {Error, *(m for _, op in routes for m in _models(op))}
    refs, schemas = components(sorted(models, key=lambda m: m.__name__))
    spec = APISpec(
        TITLE,
        version(),
        "3.1.0",
        plugins=[FlaskRules()],
        info={"description": DESCRIPTION},
        servers=[{"url": "/"}],
        security=[{"apiKey": []}],
    )
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, schema in schemas.items():
        spec.components.schema(name, schema)
    for rule, op in routes:
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        spec.path(rule=rule, operations={m.lower(): _operation(op, refs) for m in methods})
    return spec.to_dict()


def _models(op: Operation) -> list[type[BaseModel]]:
    found = [*op.ok[1].values(), *(op.body or {}).values()]
    found += [arg for t in list(found) if get_origin(t) is list for arg in get_args(t)]
    return [t for t in found if isinstance(t, type) and issubclass(t, BaseModel)]


def _schema(t: Any, refs: dict[type, dict[str, str]]) -> dict[str, Any] | None:
    if get_origin(t) is list:
        return {"type": "array", "items": _schema(get_args(t)[0], refs)}
    return refs[t] if isinstance(t, type) else t


def _content(types: dict[str, Any], refs: dict[type, dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mime, t in types.items():
        schema = _schema(t, refs)
        out[mime] = {} if schema is None else {"schema": schema}
    return out


def _operation(op: Operation, refs: dict[type, dict[str, str]]) -> dict[str, Any]:
    error_ref = {"application/json": {"schema": refs[Error]}}
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.public:
        out["security"] = []
    elif op.security:
        out["security"] = [{name: []} for name in op.security]
    params = [*_query_parameters(op.query), *op.headers]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _content(op.body, refs)}
    out["responses"] = {
        "200": {"description": op.ok[0], "content": _content(op.ok[1], refs)},
        **{str(s): {"description": ERRORS[s], "content": error_ref} for s in op.errors},
    }
    return out


def _query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(schema_generator=RecordSchema)
    out = []
    for name, prop in schema["properties"].items():
        param = {"name": name, "in": "query", "required": name in schema.get("required", ())}
        if "description" in prop:
            param["description"] = prop.pop("description")
        # An absent parameter is the model's None: a query string has no null to document.
        branches = [b for b in prop.pop("anyOf", ()) if b != {"type": "null"}]
        if prop.get("default", 0) is None:
            del prop["default"]
        out.append({**param, "schema": {**(branches[0] if len(branches) == 1 else {}), **prop}})
    return out


@bp.get("/openapi.json")
@operation("openapi", "This document", ok=("OpenAPI 3 document", None), errors=AUTH_ERRORS)
def openapi_json() -> ResponseReturnValue:
    return jsonify(build_document(current_app))


_DOCS_HTML = (Path(__file__).parent / "docs.html").read_text(encoding="utf-8")


@bp.get("/docs")
@operation(
    "docs",
    "Docs page (HTML shell; fetches this document with your key)",
    ok=("HTML page", {"text/html": None}),
    public=True,
)
def docs() -> ResponseReturnValue:
    resp = Response(_DOCS_HTML, mimetype="text/html")
    # Inline script and style only; the page may talk to this origin and nothing else.
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
    )
    return resp
