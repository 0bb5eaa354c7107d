"""Session ids for recordings: validated from ``session.json``, or derived from the recording's content.

A derived id is ``rec-`` + 24 hex digits of a BLAKE2b digest over the room, every participant's identity,
name, role, offset and file name, and every audio file's bytes: the same recording always gets the same
id (a replay stays idempotent: the store and Kafka consumers de-duplicate by id) and a different recording,
even one under the same room name, gets another.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcoach.records import Participant
from quantcoach.wire import SESSION_ID_PATTERN

SESSION_ID = re.compile(SESSION_ID_PATTERN.strip("^$"))
_READ_BYTES = 1 << 20
EXAMPLE = "2026-12-01T14:00:00Z"


def parse_session_fields(data: dict[str, Any]) -> tuple[str, str | None]:
    """``session_id`` and ``started_at`` (normalised to ISO 8601 UTC, ``...Z``) from session.json's
    object; both optional. Raises ``ValueError`` with the reason."""
    session_id = data.get("session_id", "")
    if "session_id" in data and (not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id)):
        raise ValueError(
            f"'session_id' must be 1-64 characters of letters, digits, _ and - (got {session_id!r})"
        )
    started = data.get("started_at")
    if started is None:
        return session_id, None
    if not isinstance(started, str):
        raise ValueError(f"'started_at' must be an ISO 8601 timestamp string (got {started!r})")
    try:
        when = datetime.fromisoformat(started)
    except ValueError:
        raise ValueError(
            f"'started_at' is not ISO 8601 (got {started!r}), e.g. 2026-12-01T14:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"'started_at' needs a time zone (got {started!r}), e.g. {EXAMPLE}")
    return session_id, when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def content_session_id(room: str, tracks: Iterable[tuple[Participant, Path]]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    listed = sorted(tracks, key=lambda t: t[0].identity)
    head = {
        "room": room,
        "tracks": [[p.identity, p.name, p.role, p.offset_s, path.name] for p, path in listed],
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for _, path in listed:
        with path.open("rb") as f:
            while block := f.read(_READ_BYTES):
                digest.update(block)
        digest.update(b"\0")  # file boundary
    return f"rec-{digest.hexdigest()}"
