"""A session's report page: ``GET /sessions/<id>/report`` (HTML, ``connectors.report.render_report``).

The page is self-contained (no CDN) and embeds the session's records as they are now. While the
session has no ``ended`` record it is live: it follows ``/sessions/<id>/events?after=<position>&
token=<token>`` with an EventSource, from the last position the page already holds (so it gets each
record once), and stops at the ``ended`` event. An EventSource cannot send an Authorization header, so
the URL carries a short-lived token valid for that session's events route only (``web.auth``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, url_for
from flask.typing import ResponseReturnValue

from connectors.report import render_report
from connectors.store import Store
from web.auth import event_tokens
from web.openapi import STORE_ERRORS, operation
from web.sessions import need_session

bp = Blueprint("reports", __name__)

BATCH = 1000
#: Inline script and style only; the page talks to this origin (its event stream) and nothing else.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)


def snapshot(store: Store, session_id: str) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The session's records by kind, read in position order, and the last position read: one
    consistent view (positions are committed in order), from which a live page resumes."""
    kinds: dict[str, list[dict[str, Any]]] = {"transcript": [], "window": [], "session": [], "metrics": []}
    after = 0
    while True:
        batch = store.events_after(session_id, after, BATCH)
        for e in batch:
            kinds[e.kind].append(e.record)
        if batch:
            after = batch[-1].position
        if len(batch) < BATCH:
            return kinds, after


def participants(kinds: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The roster: the latest session record's, else the last window's, else who spoke."""
    for source in (kinds["session"], kinds["window"]):
        for record in reversed(source):
            if record["participants"]:
                return record["participants"]
    seen: dict[str, dict[str, Any]] = {}
    for t in kinds["transcript"]:
        who = {"identity": t["participant"], "name": t["name"], "role": t["speaker"]}
        seen.setdefault(t["participant"], who)
    return list(seen.values())


@bp.get("/sessions/<session:session_id>/report")
@operation(
    "getSessionReport",
    "The session's report page (self-contained HTML; live while the session runs)",
    description="Timeline per speaker, talk share, response latencies and the transcript with its window "
    "boundaries. While the session has no `ended` record the page follows its event stream through a URL "
    "with a short-lived `token` (an EventSource cannot send the API key).",
    ok=("HTML page", {"text/html": None}),
    errors=STORE_ERRORS,
)
def session_report(session_id: str) -> ResponseReturnValue:
    store, info = need_session(session_id)
    kinds, last = snapshot(store, info.session_id)
    live = not any(r["event"] == "ended" for r in kinds["session"])
    events_url = None
    if live:
        token = event_tokens().mint(info.session_id)
        events_url = url_for("sessions.session_events", session_id=info.session_id, after=last, token=token)
    html = render_report(
        room=info.room,
        session_id=info.session_id,
        participants=participants(kinds),
        transcripts=sorted(kinds["transcript"], key=lambda t: (t["start"], t["utterance_id"])),
        windows=sorted(kinds["window"], key=lambda w: w["seq"]),
        metrics=kinds["metrics"][-1] if kinds["metrics"] else None,
        live=live,
        events_url=events_url,
    )
    resp = Response(html, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = CSP
    return resp
