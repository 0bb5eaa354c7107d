"""The OpenAPI 3 document (``/openapi.json``, API key required) and a docs page (``/docs``).

The document is built here in code next to the routes' own limits (same regexes, same bounds), and a
test checks that its paths and methods are exactly the app's routes. The docs page is a static shell,
no CDN: its script asks for an API key, fetches /openapi.json with it and lists the operations.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from connectors.livekit_rooms import ROLES
from quantcoach.records import SPEAKER_ROLES, TRANSCRIPT_SCHEMA, WINDOW_REASONS, WINDOW_SCHEMA
from web.errors import IDENTITY_RE, NAME_MAX, RESERVED_ROOM_NAMES, ROOM_NAME_RE
from web.health import version
from web.rooms import EMPTY_TIMEOUT_LIMIT, MAX_PARTICIPANTS_LIMIT
from web.transcripts import FORMATS

bp = Blueprint("openapi", __name__)

_ROOM = {
    "type": "string",
    "pattern": f"^{ROOM_NAME_RE.pattern}$",
    "maxLength": 64,
    "not": {"enum": sorted(RESERVED_ROOM_NAMES)},
}
_IDENTITY = {"type": "string", "pattern": f"^{IDENTITY_RE.pattern}$", "maxLength": 128}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "invalid input",
        401: "missing or invalid API key (webhook: invalid signature)",
        403: "no API keys configured on the server, or CORS origin not allowed",
        404: "unknown room (transcript routes: nothing stored for the room)",
        405: "method not allowed (`/rooms/create` is a route, so no room is called `create`)",
        409: "room already exists",
        413: "request body too large",
        415: "body is not application/json",
        502: "LiveKit rejected the request (server credentials or configuration)",
        503: "LiveKit not configured or unreachable, Kafka unavailable, or the transcript store unavailable",
    }
    return {str(s): _json(_ref("Error"), words[s]) for s in statuses}


_AUTH_ERRORS = (401, 403)
_STORE_ERRORS = (400, *_AUTH_ERRORS, 404, 503)
_LIVEKIT_ERRORS = (502, 503)


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Health": {
            "type": "object",
            "required": [
                "status",
                "service",
                "version",
                "livekit_configured",
                "livekit_reachable",
                "kafka_configured",
            ],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "service": {"type": "string"},
                "version": {"type": "string"},
                "livekit_configured": {"type": "boolean"},
                "livekit_reachable": {"type": "boolean"},
                "kafka_configured": {"type": "boolean"},
            },
        },
        "CreateRoomRequest": {
            "type": "object",
            "properties": {
                "room_name": {**_ROOM, "nullable": True, "description": "generated when absent or null"},
                "max_participants": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PARTICIPANTS_LIMIT,
                    "default": 10,
                },
                "empty_timeout": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": EMPTY_TIMEOUT_LIMIT,
                    "description": "seconds an empty room stays open; 0 = LiveKit's default",
                },
            },
        },
        "CreateRoomResponse": {
            "type": "object",
            "required": [
                "sid",
                "name",
                "max_participants",
                "creation_time",
                "interviewer_token",
                "candidate_token",
                "agent_token",
                "url",
            ],
            "properties": {
                "sid": {"type": "string"},
                "name": {"type": "string"},
                "max_participants": {"type": "integer"},
                "creation_time": {"type": "integer", "description": "unix seconds"},
                "interviewer_token": {"type": "string"},
                "candidate_token": {"type": "string"},
                "agent_token": {"type": "string"},
                "url": {"type": "string"},
            },
        },
        "TokenRequest": {
            "type": "object",
            "required": ["room_name", "participant_identity"],
            "properties": {
                "room_name": _ROOM,
                "participant_identity": _IDENTITY,
                "participant_name": {
                    "type": "string",
                    "nullable": True,
                    "maxLength": NAME_MAX,
                    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
                },
                "role": {"type": "string", "enum": list(ROLES), "default": "participant"},
            },
        },
        "TokenResponse": {
            "type": "object",
            "required": ["token", "room_name", "participant_identity", "url"],
            "properties": {
                "token": {"type": "string", "description": "LiveKit access token (JWT)"},
                "room_name": {"type": "string"},
                "participant_identity": {"type": "string"},
                "url": {"type": "string"},
            },
        },
        "RoomInfo": {
            "type": "object",
            "required": ["sid", "name", "num_participants", "creation_time"],
            "properties": {
                "sid": {"type": "string"},
                "name": {"type": "string"},
                "num_participants": {"type": "integer"},
                "creation_time": {"type": "integer"},
            },
        },
        "ParticipantInfo": {
            "type": "object",
            "required": ["sid", "identity", "name", "state", "role"],
            "properties": {
                "sid": {"type": "string"},
                "identity": {"type": "string"},
                "name": {"type": "string"},
                "state": {"type": "string", "enum": ["JOINING", "JOINED", "ACTIVE", "DISCONNECTED"]},
                "role": {"type": "string", "description": "the participant's `role` attribute"},
            },
        },
        "DeleteRoomResponse": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
        },
        "Transcript": {
            "type": "object",
            "description": "A final transcript, as on the `interview.transcripts` topic",
            "required": [
                "schema",
                "room",
                "participant",
                "speaker",
                "name",
                "utterance_id",
                "text",
                "is_final",
                "start",
                "end",
                "engine",
                "emitted_at",
            ],
            "properties": {
                "schema": {"type": "string", "enum": [TRANSCRIPT_SCHEMA]},
                "room": {"type": "string"},
                "participant": {"type": "string", "description": "identity"},
                "speaker": {"type": "string", "description": f"role: {' | '.join(SPEAKER_ROLES)}"},
                "name": {"type": "string"},
                "utterance_id": {"type": "string"},
                "text": {"type": "string"},
                "is_final": {"type": "boolean"},
                "start": {"type": "number", "description": "media seconds"},
                "end": {"type": "number", "description": "media seconds"},
                "engine": {"type": "string"},
                "emitted_at": {"type": "string", "description": "ISO 8601 UTC"},
            },
        },
        "Segment": {
            "type": "object",
            "required": ["participant", "speaker", "name", "text", "start", "end"],
            "properties": {
                "participant": {"type": "string"},
                "speaker": {"type": "string"},
                "name": {"type": "string"},
                "text": {"type": "string"},
                "start": {"type": "number"},
                "end": {"type": "number"},
            },
        },
        "Window": {
            "type": "object",
            "description": "An evaluation window, as on the `interview.windows` topic",
            "required": ["schema", "room", "window_id", "seq", "start", "end", "reason", "segments", "text"],
            "properties": {
                "schema": {"type": "string", "enum": [WINDOW_SCHEMA]},
                "room": {"type": "string"},
                "window_id": {"type": "string", "description": "`<room>:<seq>`"},
                "seq": {"type": "integer", "minimum": 0},
                "start": {"type": "number", "description": "media seconds"},
                "end": {"type": "number", "description": "media seconds"},
                "reason": {"type": "string", "enum": list(WINDOW_REASONS)},
                "segments": {"type": "array", "items": _ref("Segment")},
                "text": {"type": "string", "description": "`Interviewer: ...` lines"},
                "emitted_at": {"type": "string"},
            },
        },
        "RoomEvent": {
            "type": "object",
            "description": "One Server-Sent Event of `/rooms/{name}/events`",
            "required": ["event", "data", "id"],
            "properties": {
                "event": {"type": "string", "enum": ["transcript", "window"]},
                "data": {"type": "string", "description": "the record's JSON (`Transcript` or `Window`)"},
                "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the store position"},
            },
        },
        "WebhookAck": {
            "type": "object",
            "required": ["status", "event", "forwarded"],
            "properties": {
                "status": {"type": "string"},
                "event": {"type": "string"},
                "forwarded": {"type": "boolean"},
            },
        },
    }
    room_param = {"name": "name", "in": "path", "required": True, "schema": _ROOM}
    health_op = {
        "security": [],
        "responses": {"200": _json(_ref("Health"), "service status")},
    }
    paths: dict[str, Any] = {
        "/": {"get": {**health_op, "operationId": "root", "summary": "Service status"}},
        "/health": {"get": {**health_op, "operationId": "health", "summary": "Service status"}},
        "/rooms/create": {
            "post": {
                "operationId": "createRoom",
                "summary": "Create a room and tokens for interviewer, candidate and agent",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CreateRoomRequest")}},
                },
                "responses": {
                    "200": _json(_ref("CreateRoomResponse"), "room created"),
                    **_errors(400, *_AUTH_ERRORS, 409, 413, 415, *_LIVEKIT_ERRORS),
                },
            }
        },
        "/tokens/generate": {
            "post": {
                "operationId": "generateToken",
                "summary": "A participant token with the grants of its role",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TokenRequest")}},
                },
                "responses": {
                    "200": _json(_ref("TokenResponse"), "token issued"),
                    **_errors(400, *_AUTH_ERRORS, 413, 415, 503),
                },
            }
        },
        "/rooms": {
            "get": {
                "operationId": "listRooms",
                "summary": "Active rooms",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("RoomInfo")}, "active rooms"),
                    **_errors(*_AUTH_ERRORS, *_LIVEKIT_ERRORS),
                },
            }
        },
        "/rooms/{name}/participants": {
            "get": {
                "operationId": "listParticipants",
                "summary": "Participants of a room",
                "parameters": [room_param],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("ParticipantInfo")}, "participants"),
                    **_errors(400, *_AUTH_ERRORS, 404, *_LIVEKIT_ERRORS),
                },
            }
        },
        "/rooms/{name}": {
            "delete": {
                "operationId": "deleteRoom",
                "summary": "Delete a room and disconnect everyone in it",
                "parameters": [room_param],
                "responses": {
                    "200": _json(_ref("DeleteRoomResponse"), "room deleted"),
                    **_errors(400, *_AUTH_ERRORS, 404, 405, *_LIVEKIT_ERRORS),
                },
            }
        },
        "/rooms/{name}/transcript": {
            "get": {
                "operationId": "getTranscript",
                "summary": "The room's final transcripts in media-time order",
                "parameters": [
                    room_param,
                    {
                        "name": "since",
                        "in": "query",
                        "description": "only transcripts starting at or after this media time (s)",
                        "schema": {"type": "number", "minimum": 0},
                    },
                    {
                        "name": "format",
                        "in": "query",
                        "description": "`text`: one `Interviewer: ...` line per transcript",
                        "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "transcripts (JSON records, or text lines with `format=text`)",
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": _ref("Transcript")}},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_STORE_ERRORS),
                },
            }
        },
        "/rooms/{name}/windows": {
            "get": {
                "operationId": "getWindows",
                "summary": "The room's evaluation windows in order",
                "parameters": [room_param],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Window")}, "windows"),
                    **_errors(*_STORE_ERRORS),
                },
            }
        },
        "/rooms/{name}/events": {
            "get": {
                "operationId": "roomEvents",
                "summary": "Server-Sent Events: the room's stored records, then new ones as they land",
                "description": "Events `transcript` and `window`; `data` is the record's JSON on one line, "
                "`id` its store position (increasing). The stream starts with `retry: <ms>`, sends "
                "`: keep-alive` comments while idle and ends after a server-set lifetime (or `max_s`); "
                "reconnect with `Last-Event-ID` to get exactly the records after that id.",
                "parameters": [
                    room_param,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "resume after this event id (EventSource sends it when it "
                        "reconnects); absent or empty: from the room's first record",
                        "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                    },
                    {
                        "name": "max_s",
                        "in": "query",
                        "description": "end the stream after this many seconds (the server caps it)",
                        "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "an event stream (the schema is one event's, as OpenAPI 3.0 reads it)",
                        "content": {"text/event-stream": {"schema": _ref("RoomEvent")}},
                    },
                    **_errors(*_STORE_ERRORS),
                },
            }
        },
        "/livekit/webhook": {
            "post": {
                "operationId": "livekitWebhook",
                "summary": "LiveKit webhook receiver (signed by LiveKit, no API key)",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/webhook+json": {"schema": {"type": "object"}},
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("WebhookAck"), "event accepted"),
                    **_errors(400, 401, 413, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3 document", "content": {"application/json": {}}},
                    **_errors(*_AUTH_ERRORS),
                },
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "summary": "Docs page (HTML shell; fetches this document with your key)",
                "security": [],
                "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "QuantCoach API",
            "version": version(),
            "description": "Rooms and tokens for live mock interviews, and their stored transcripts and "
            "windows (read, or followed live as Server-Sent Events). Errors are "
            '`{"error": {"code", "message"}}`. Every route but `/`, `/health`, `/docs` and the LiveKit '
            "webhook requires `Authorization: Bearer <API key>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(build_document())


_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>QuantCoach API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace;background:#f4f4f4}pre{padding:.6rem;overflow:auto}
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}#err{color:#b00}
</style></head><body>
<h1>QuantCoach API</h1>
<p>The document at <code>/openapi.json</code> needs an API key. It stays in this page only.</p>
<form id="f"><input id="k" type="password" placeholder="API key" size="40" autocomplete="off">
<button>Load</button></form><p id="err"></p><div id="ops"></div>
<script>
const el = (t, txt) => { const e = document.createElement(t); if (txt) e.textContent = txt; return e; };
document.getElementById("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("err"), ops = document.getElementById("ops");
  err.textContent = ""; ops.replaceChildren();
  const key = document.getElementById("k").value;
  const r = await fetch("openapi.json", {headers: {Authorization: "Bearer " + key}});
  const doc = await r.json();
  if (!r.ok) { err.textContent = doc.error ? doc.error.message : r.statusText; return; }
  ops.append(el("p", doc.info.description));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const box = el("div"); box.className = "op";
      const h = el("h3"); const m = el("span", method); m.className = "m";
      h.append(m, el("code", path), el("span", " - " + (op.summary || ""))); box.append(h);
      if (op.parameters) box.append(el("pre", "parameters: " + JSON.stringify(op.parameters, null, 1)));
      if (op.requestBody) box.append(el("pre", "body: " + JSON.stringify(op.requestBody.content, null, 1)));
      box.append(el("pre", "responses: " + Object.entries(op.responses)
        .map(([s, v]) => s + " " + v.description).join("\\n")));
      ops.append(box);
    }
  }
  const s = el("details"); s.append(el("summary", "schemas"),
    el("pre", JSON.stringify(doc.components.schemas, null, 1))); ops.append(s);
});
</script></body></html>
"""


@bp.get("/docs")
def docs() -> ResponseReturnValue:
    resp = Response(_DOCS_HTML, mimetype="text/html")
    # Inline script and style only; the page may talk to this origin and nothing else.
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
    )
    return resp
