"""The realtime STT wire messages: what we send, what the server sends and how its errors are taken.

``docs/elevenlabs-realtime-protocol.md`` has the sources for every type named here. Parsing checks
each message against the documented schema as far as we rely on it: a JSON object with a string
``message_type``; a transcript's ``text`` a string; a timestamped commit's ``words`` a list (or null)
and its ``language_code`` a string (or null). What fails is ``MalformedMessage``, never taken half-way.
Word times are used only when finite and ordered (and, in the session, within the audio sent).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stt.pcm import STT_SAMPLE_RATE

# Server message types.
SESSION_STARTED = "session_started"
COMMITTED = "committed_transcript"
COMMITTED_TIMED = "committed_transcript_with_timestamps"
FATAL_ERRORS = frozenset({"auth_error", "unaccepted_terms", "quota_exceeded", "invalid_request"})
SESSION_END_ERRORS = frozenset({"session_time_limit_exceeded", "insufficient_audio_activity"})
RETRYABLE_ERRORS = frozenset(
    {
        "error",
        "transcriber_error",
        "rate_limited",
        "queue_overflow",
        "resource_exhausted",
        "input_error",
        "chunk_size_exceeded",
        "commit_throttled",
    }
)
ERROR_TYPES = FATAL_ERRORS | SESSION_END_ERRORS | RETRYABLE_ERRORS
PARTIAL_TYPES = frozenset({"partial_transcript", "final_transcript", "final_transcript_with_timestamps"})
IGNORED_TYPES = frozenset({"committed_transcript_entities", "edited_transcript"})
TRANSCRIPT_TYPES = PARTIAL_TYPES | {COMMITTED, COMMITTED_TIMED}  # each has a required string `text`


# ------------------------------------------------------------------------------------------ we send
def audio_message(pcm: np.ndarray) -> str:
    """An ``input_audio_chunk`` of int16 samples (none: the keep-alive)."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii"),
            "commit": False,
            "sample_rate": STT_SAMPLE_RATE,
        }
    )


def keepalive_message() -> str:
    return audio_message(np.zeros(0, np.int16))


def commit_message() -> str:
    """Commit what the server holds now (end of input, or a track that went quiet mid-utterance)."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": "",
            "commit": True,
            "sample_rate": STT_SAMPLE_RATE,
        }
    )


# ------------------------------------------------------------------------------------------ server sends
class MalformedMessage(ValueError):
    """Not JSON, not an object with a string ``message_type``, or a known type of the wrong shape."""

    def __init__(self, reason: Literal["not JSON", "no message_type", "invalid"], detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason

    @property
    def not_json(self) -> bool:
        return self.reason == "not JSON"


@dataclass(frozen=True, slots=True)
class ServerMessage:
    type: str  # the message_type, or the error kind that a generic "error" message names
    text: str  # "" where absent or not a string
    raw: Mapping[str, Any]

    @property
    def error_detail(self) -> Any:
        return self.raw.get("error")

    @property
    def words(self) -> Any:
        return self.raw.get("words")


def parse(raw: str | bytes) -> ServerMessage:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting ([[[[...)
        raise MalformedMessage("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("message_type"), str):
        raise MalformedMessage("no message_type")
    mt = msg["message_type"]
    if mt == "error" and isinstance(msg.get("error"), str) and msg["error"] in ERROR_TYPES:
        mt = msg["error"]  # some docs show the kind in `error` under a generic message_type
    if mt in TRANSCRIPT_TYPES and not isinstance(msg.get("text"), str):
        raise MalformedMessage("invalid", f"{mt[:40]} without a string text")
    if mt == COMMITTED_TIMED:
        if not isinstance(msg.get("words"), list | None):
            raise MalformedMessage("invalid", f"{mt} whose words are not a list")
        if not isinstance(msg.get("language_code"), str | None):
            raise MalformedMessage("invalid", f"{mt} whose language_code is not a string")
    text = msg.get("text") if isinstance(msg.get("text"), str) else ""
    return ServerMessage(mt, text, msg)


def word_span(words: Any, origin: int) -> tuple[int, int] | None:
    """Stream samples spanned by the timed words (spacing excluded), or None without usable words.

    Word times are seconds since the session's first audio, which was stream sample ``origin``.
    """
    if not isinstance(words, list):
        return None
    starts: list[float] = []
    ends: list[float] = []
    for w in words:
        if not isinstance(w, Mapping) or w.get("type") == "spacing":
            continue
        a, b = w.get("start"), w.get("end")
        if _finite(a) and _finite(b) and 0 <= a <= b:
            starts.append(float(a))
            ends.append(float(b))
    if not starts:
        return None
    return origin + round(min(starts) * STT_SAMPLE_RATE), origin + round(max(ends) * STT_SAMPLE_RATE)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def word_confidence(words: Any) -> float | None:
    """0..1 from the words' ``logprob`` (spacing excluded): exp of their mean, None without any."""
    if not isinstance(words, list):
        return None
    logprobs = [
        float(w["logprob"])
        for w in words
        if isinstance(w, Mapping) and w.get("type") != "spacing" and _finite(w.get("logprob"))
    ]
    if not logprobs:
        return None
    return min(1.0, max(0.0, math.exp(min(0.0, sum(logprobs) / len(logprobs)))))


# ISO 639-3 -> 639-1 for the languages Scribe reports most; the server may send either form [API].
_ISO_639_1 = {
    "eng": "en", "spa": "es", "fra": "fr", "deu": "de", "ita": "it", "por": "pt", "nld": "nl",
    "pol": "pl", "rus": "ru", "ukr": "uk", "tur": "tr", "ara": "ar", "hin": "hi", "ben": "bn",
    "zho": "zh", "cmn": "zh", "yue": "zh", "jpn": "ja", "kor": "ko", "vie": "vi", "tha": "th",
    "ind": "id", "msa": "ms", "swe": "sv", "nor": "no", "nob": "no", "dan": "da", "fin": "fi",
    "ces": "cs", "slk": "sk", "hun": "hu", "ron": "ro", "bul": "bg", "ell": "el", "heb": "he",
    "fas": "fa", "urd": "ur", "tam": "ta", "tel": "te", "cat": "ca", "hrv": "hr", "srp": "sr",
}  # fmt: skip


def language(code: Any) -> str | None:
    """An ISO 639-1 code from what the server reported (639-1 or 639-3, maybe with a region), or None."""
    if not isinstance(code, str):
        return None
    base = code.strip().replace("_", "-").split("-")[0].casefold()
    if len(base) == 2 and base.isascii() and base.isalpha():
        return base
    return _ISO_639_1.get(base)
