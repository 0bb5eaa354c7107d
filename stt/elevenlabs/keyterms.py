"""The vocabulary sent as ``keyterms``, within the limits ElevenLabs documents for it.

Keyterm prompting biases the model towards terms that are rare in general speech. Scribe v2 Realtime
takes at most 50 keyterms of at most 20 characters each [KT], as an array [API] that goes on the session
URL as one repeated ``keyterms`` query parameter per term. The default is the shared quant vocabulary
(``stt.vocabulary.QUANT_TERMS``, also Whisper's hotwords). Terms beyond the limits are refused when the
engine is built, with a message that names the term and the limit, before any connection.
"""

from __future__ import annotations

from collections.abc import Iterable

from stt.protocol import SttError
from stt.vocabulary import QUANT_TERMS

MAX_KEYTERMS = 50
MAX_KEYTERM_CHARS = 20
DEFAULT_KEYTERMS: tuple[str, ...] = QUANT_TERMS


class KeytermError(SttError, ValueError):
    """The keyterms break ElevenLabs' documented limits; the message says which and how."""


def check_keyterms(terms: Iterable[str]) -> tuple[str, ...]:
    """The terms, whitespace collapsed, without repeats (case-insensitive, first spelling kept),
    checked against the limits."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in terms:
        term = " ".join(str(raw).split())
        if not term:
            raise KeytermError("keyterms: an empty term")
        if len(term) > MAX_KEYTERM_CHARS:
            raise KeytermError(
                f"keyterms: {term!r} has {len(term)} characters; ElevenLabs realtime takes at most "
                f"{MAX_KEYTERM_CHARS} per term"
            )
        if term.casefold() not in seen:
            seen.add(term.casefold())
            out.append(term)
    if len(out) > MAX_KEYTERMS:
        raise KeytermError(
            f"keyterms: {len(out)} terms; ElevenLabs realtime takes at most {MAX_KEYTERMS} per session"
        )
    return tuple(out)
