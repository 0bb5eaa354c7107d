"""Speaker roles, defined once: the roles a token is minted for, the ones transcribed, and how the
live source tells a participant's role (the rules are in docs/livekit-source.md, "Speaker labels").

Imports nothing of ours (and not the LiveKit SDK): the web API, the recording format and the live
source all read their roles from here.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping

#: Roles a participant token can be minted for (the API's grants table covers each).
ROLES = ("interviewer", "candidate", "agent", "participant")
#: Roles whose speech is transcribed and that appear as a transcript's ``speaker``.
SPEAKER_ROLES = ("interviewer", "candidate", "participant")

#: ``livekit.rtc.ParticipantKind.PARTICIPANT_KIND_AGENT`` (the protocol's value; a test checks it).
AGENT_KIND = 4

#: What a ``role`` attribute or metadata key may say (case-insensitive) -> the role it names.
ROLE_NAMES = {
    "interviewer": "interviewer",
    "iv": "interviewer",
    "candidate": "candidate",
    "cand": "candidate",
    "agent": "agent",
    "participant": "participant",
}
#: Identity prefixes: the name, then the end or one of ``- _ . : /`` or a digit (``iv-7``, not ``ivan``).
IDENTITY_ROLES = (
    (re.compile(r"^(?:interviewer|iv)(?:$|[-_.:/0-9])", re.IGNORECASE), "interviewer"),
    (re.compile(r"^(?:candidate|cand)(?:$|[-_.:/0-9])", re.IGNORECASE), "candidate"),
)


def speaker_role(
    identity: str, attributes: Mapping[str, str] | None = None, metadata: str = "", kind: int = 0
) -> str:
    """The participant's role: its kind, its ``role`` attribute, a ``role`` in its JSON metadata, its
    identity's prefix, else ``participant`` (the first that applies)."""
    if kind == AGENT_KIND:
        return "agent"
    candidates = [(attributes or {}).get("role", "")]
    if metadata:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            candidates.append(str(json.loads(metadata).get("role", "")))
    for value in candidates:
        role = ROLE_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
        if role:
            return role
    for pattern, role in IDENTITY_ROLES:
        if pattern.match(identity):
            return role
    return "participant"
