"""The realtime STT wire messages: what we send, what the server sends and how its errors are taken.

``docs/elevenlabs-realtime-protocol.md`` has the sources for every type named here. Parsing checks the
shape only as far as we rely on it: a JSON object with a string ``message_type``; text that is not a
string reads as empty; word times are used only when finite and ordered.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    """Not a JSON object with a string ``message_type``; ``not_json`` tells the two cases apart."""

    def __init__(self, not_json: bool) -> None:
        super().__init__("not JSON" if not_json else "no message_type")
        self.not_json = not_json


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
    except (ValueError, UnicodeDecodeError):
        raise MalformedMessage(not_json=True) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("message_type"), str):
        raise MalformedMessage(not_json=False)
    mt = msg["message_type"]
    if mt == "error" and msg.get("error") in ERROR_TYPES:
        mt = msg["error"]  # some docs show the kind in `error` under a generic message_type
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
