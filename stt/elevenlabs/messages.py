"""The realtime STT wire messages: what we send, what the server sends and how its errors are taken.

``docs/elevenlabs-realtime-protocol.md`` has the sources for every type named here. Every server
message is validated (pydantic, strict types) against the documented schema [API] before anything is
taken from it: a JSON object with a string ``message_type``; a transcript's ``text`` a string; a
timestamped transcript's ``language_code`` a string or null and ``words`` a list or null;
``session_started`` with a string ``session_id`` and a ``config`` object; an error with a string
``error``. What fails is ``MalformedMessage``, never taken half-way, except that an error kind is
taken even when its detail is missing (an ``auth_error`` without a reason still ends the stream).
Word items are validated one by one (``Word``): one that fails is left out of the word times, not
the whole commit; word times are used only when finite and ordered (and, in the session, within the
audio sent). Where the docs disagree we accept both forms: ``characters`` as strings [API] or as
timed objects [SDK types 0.21], the old error names the SDKs still match (``unaccepted_terms_error``,
``quota_exceeded_error``), and ``vad_commit_strategy`` beside ``commit_strategy`` in the config.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

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
    }
)
#: A commit the server ignored ("Commit request ignored: only 0.01s of uncommitted audio. You need at
#: least 0.3s ..." [OBS], or too many in a short time [EVT]): the session goes on; if the server
#: closes the socket after it, as [EVT] says errors do, that close is taken like any other.
NOTICE_ERRORS = frozenset({"commit_throttled"})
ERROR_ALIASES = {"unaccepted_terms_error": "unaccepted_terms", "quota_exceeded_error": "quota_exceeded"}
ERROR_TYPES = FATAL_ERRORS | SESSION_END_ERRORS | RETRYABLE_ERRORS | NOTICE_ERRORS
#: final_transcript(_with_timestamps): settled, but not committed yet [EVT]; the commit follows.
PARTIAL_TYPES = frozenset({"partial_transcript", "final_transcript", "final_transcript_with_timestamps"})
IGNORED_TYPES = frozenset({"committed_transcript_entities", "edited_transcript", "warning"})
TIMED_TYPES = frozenset({COMMITTED_TIMED, "final_transcript_with_timestamps"})
TRANSCRIPT_TYPES = PARTIAL_TYPES | {COMMITTED, COMMITTED_TIMED}
#: The server ignores a commit with less uncommitted audio than this [OBS]; we never send one.
MIN_COMMIT_AUDIO_S = 0.3


# ------------------------------------------------------------------------------------------ we send
def audio_message(pcm: np.ndarray, *, commit: bool = False) -> str:
    """An ``input_audio_chunk`` of int16 samples (none: the keep-alive); all four fields are required."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii"),
            "commit": commit,
            "sample_rate": STT_SAMPLE_RATE,
        }
    )


def keepalive_message() -> str:
    return audio_message(np.zeros(0, np.int16))


def commit_messages(padding: int = 0, chunk: int = STT_SAMPLE_RATE // 5) -> list[str]:
    """Commit what the server holds now [SDK ``commit()``], after ``padding`` samples of silence in
    chunks of at most ``chunk`` (the end of input, when less than ``MIN_COMMIT_AUDIO_S`` may be
    uncommitted; mid-stream silence would shift the audio after it)."""
    sizes = [min(chunk, padding - i) for i in range(0, padding, chunk)] or [0]
    return [audio_message(np.zeros(n, np.int16), commit=k == len(sizes) - 1) for k, n in enumerate(sizes)]


# ------------------------------------------------------------------------------------------ schemas
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)


class Character(_Model):
    text: str | None = None
    start: float | None = None
    end: float | None = None


class Word(_Model):
    """One ``words`` item: ``type`` is word, spacing or audio_event (others are kept, as words)."""

    text: str | None = None
    start: float | None = None
    end: float | None = None
    type: str | None = None
    speaker_id: str | None = None
    logprob: float | None = None
    characters: list[str | Character] | None = None


class SessionConfig(_Model):
    """What ``session_started`` echoes; only the fields we read are typed, the rest are kept."""

    sample_rate: int | None = None
    audio_format: str | None = None
    language_code: str | None = None
    commit_strategy: str | None = None
    vad_commit_strategy: bool | str | None = None
    include_timestamps: bool | None = None


class _SessionStarted(_Model):
    message_type: str
    session_id: str
    config: SessionConfig


class _Transcript(_Model):
    message_type: str
    text: str


class _TimedTranscript(_Transcript):
    language_code: str | None = None
    words: list[Any] | None = None


class _Error(_Model):
    message_type: str
    error: str


# ------------------------------------------------------------------------------------------ server sends
class MalformedMessage(ValueError):
    """Not JSON, not an object with a string ``message_type``, or a known type of the wrong shape."""

    def __init__(
        self,
        reason: Literal["not JSON", "no message_type", "invalid"],
        detail: str = "",
        message_type: str = "",
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.message_type = message_type  # for "invalid": the type that failed its schema

    @property
    def not_json(self) -> bool:
        return self.reason == "not JSON"


@dataclass(frozen=True, slots=True)
class ServerMessage:
    type: str  # the message_type (an alias resolved, a generic "error" naming a kind taken as that kind)
    text: str = ""
    words: tuple[Word, ...] | None = None  # the valid word items of a timed transcript
    bad_words: int = 0  # word items that failed their schema (left out of the times)
    language_code: str | None = None
    session_id: str | None = None
    config: SessionConfig | None = None
    error: str | None = None  # an error's detail
    problem: str | None = None  # an error kind whose message failed its schema: taken all the same
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse(raw: str | bytes) -> ServerMessage:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting ([[[[...)
        raise MalformedMessage("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("message_type"), str):
        raise MalformedMessage("no message_type")
    mt = ERROR_ALIASES.get(msg["message_type"], msg["message_type"])
    if mt == "error" and isinstance(msg.get("error"), str) and msg["error"] in ERROR_TYPES:
        mt = msg["error"]  # some docs show the kind in `error` under a generic message_type
    try:
        if mt == SESSION_STARTED:
            s = _SessionStarted.model_validate(msg)
            return ServerMessage(mt, session_id=s.session_id, config=s.config, raw=msg)
        if mt in TIMED_TYPES:
            t = _TimedTranscript.model_validate(msg)
            words, bad = _words(t.words)
            return ServerMessage(mt, t.text, words, bad, t.language_code, raw=msg)
        if mt in TRANSCRIPT_TYPES:
            return ServerMessage(mt, _Transcript.model_validate(msg).text, raw=msg)
        if mt in ERROR_TYPES:
            return ServerMessage(mt, error=_Error.model_validate(msg).error, raw=msg)
    except ValidationError as exc:
        if mt in ERROR_TYPES:
            return ServerMessage(mt, problem=_describe(exc), raw=msg)
        raise MalformedMessage("invalid", f"{mt[:40]}: {_describe(exc)}", mt) from None
    return ServerMessage(mt, raw=msg)  # a type we do not read: the session decides


def _words(items: list[Any] | None) -> tuple[tuple[Word, ...] | None, int]:
    if items is None:
        return None, 0
    words: list[Word] = []
    for item in items:
        with contextlib.suppress(ValidationError):
            words.append(Word.model_validate(item))
    return tuple(words), len(items) - len(words)


def _describe(exc: ValidationError) -> str:
    """The first problem, by field (never the value: it came from the network)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"[:200]


def _timed(words: Sequence[Word] | None) -> list[Word]:
    """The words that carry speech times: not spacing."""
    return [w for w in words or () if w.type != "spacing"]


def word_span(words: Sequence[Word] | None, origin: int) -> tuple[int, int] | None:
    """Stream samples spanned by the timed words (spacing excluded; audio events count: they are
    sound too), or None without usable words.

    Word times are seconds since the session's first audio, which was stream sample ``origin``.
    """
    spans = [
        (w.start, w.end)
        for w in _timed(words)
        if w.start is not None and w.end is not None and 0 <= w.start <= w.end
    ]
    if not spans:
        return None
    return (
        origin + round(min(a for a, _ in spans) * STT_SAMPLE_RATE),
        origin + round(max(b for _, b in spans) * STT_SAMPLE_RATE),
    )


def word_confidence(words: Sequence[Word] | None) -> float | None:
    """0..1 from the words' ``logprob`` ("confidence score for this word" [API]; spacing and audio
    events excluded): exp of their mean, None without any."""
    logprobs = [w.logprob for w in _timed(words) if w.type != "audio_event" and w.logprob is not None]
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
