"""What ElevenLabs documents of its realtime speech-to-text protocol, as the local stand-in
(``elevenlabs_server``) checks and answers it, and the faults that stand-in can inject.

Sources, as in docs/elevenlabs-realtime-protocol.md: [API] the AsyncAPI spec on
https://elevenlabs.io/docs/api-reference/speech-to-text/v-1-speech-to-text-realtime (query parameters,
defaults, message schemas); [EVT] the realtime event reference (event and error types, "an error
message will be returned before the WebSocket connection is closed"); [SDK] elevenlabs-python /
elevenlabs-js (parameter ranges, repeated ``keyterms``, the commit message); [OBS] what the service was
seen to do (elevenlabs/packages#378: "Commit request ignored: only 0.01s of uncommitted audio. You need
at least 0.3s of uncommitted audio before committing.").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tests.support.elevenlabs_audio import SR

PATH = "/v1/speech-to-text/realtime"
MAX_KEYTERMS, MAX_KEYTERM_CHARS = 50, 20  # Scribe v2 Realtime's documented keyterm limits
MIN_COMMIT_S = 0.3  # "You need at least 0.3s of uncommitted audio before committing." [OBS]
#: The documented error types [EVT][API]: each one is sent as {"message_type": kind, "error": detail}.
ERROR_TYPES = (
    "error", "auth_error", "quota_exceeded", "commit_throttled", "unaccepted_terms", "rate_limited",
    "queue_overflow", "resource_exhausted", "session_time_limit_exceeded", "input_error",
    "invalid_request", "chunk_size_exceeded", "insufficient_audio_activity", "transcriber_error",
)  # fmt: skip
AUDIO_FORMATS = ("pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000")
BOOLEANS = {  # name: default
    "include_timestamps": False,
    "include_language_detection": False,
    "no_verbatim": False,
    "enable_logging": True,
}
RANGES = {  # name: (type, low, high, default)
    "vad_silence_threshold_secs": (float, 0.3, 3.0, 1.5),
    "vad_threshold": (float, 0.1, 0.9, 0.4),
    "min_speech_duration_ms": (int, 50, 2000, 100),
    "min_silence_duration_ms": (int, 50, 2000, 100),
}


# ------------------------------------------------------------------------------------------ faults
@dataclass(frozen=True)
class Fault:
    """What goes wrong on one connection, and when: drop the connection (abort or close frame; also on
    a commit request, before answering it), answer a documented error type (with or without its
    ``error`` field), a ``commit_throttled`` that leaves the session open, stall, send malformed JSON,
    unknown message types and hostile shapes, slow every message down, or reject the HTTP handshake.

    It fires once the session has received ``at_audio_s`` seconds of audio (and, with
    ``mid_utterance``, only while an utterance is open, i.e. after a partial and before its commit;
    with ``on_commit``, only on a commit request, before it is answered).
    """

    kind: Literal["drop", "error", "throttle", "stall", "malformed", "slow", "http_status", "none"]
    at_audio_s: float = 0.0
    mid_utterance: bool = False
    error_type: str = "error"  # kind == "error": the message_type sent before closing
    error_field: bool = True  # kind == "error": False sends the error without its `error` detail
    abort: bool = True  # kind == "drop": abort TCP (True) or send a close frame with close_code
    close_code: int = 1011
    duration_s: float = 1.0  # kind == "stall"
    delay_s: float = 0.05  # kind == "slow": before every message the server sends
    status: int = 503  # kind == "http_status"
    on_commit: bool = False


@dataclass
class ConnectionRecord:
    index: int
    params: dict[str, str] = field(default_factory=dict)  # single-valued query parameters
    keyterms: list[str] = field(default_factory=list)  # the repeated `keyterms` parameter, in order
    key_ok: bool = False
    audio_samples: int = 0
    chunks: int = 0
    empty_chunks: int = 0
    max_chunk_bytes: int = 0
    commit_requests: int = 0
    commit_at: list[int] = field(default_factory=list)  # audio_samples received at each commit request
    throttled: int = 0  # commit requests ignored (commit_throttled)
    last_chunk_at: float = 0.0  # on the server's clock
    sent: list[str] = field(default_factory=list)  # message types sent
    fault_fired: bool = False
    closed_reason: str = ""


#: What the "malformed" fault sends: hostile shapes, and documented messages we do not read (none of
#: them may change a transcript; a second session_started may not change the session).
MALFORMED = (
    '{"message_type": "partial_transcr',
    "[1, 2, 3]",
    '{"text": "no type"}',
    '{"message_type": "mystery_event", "text": "???"}',
    "\x00\xff not json",
    "[" * 100_000,  # nesting deeper than any JSON parser recurses
    '{"message_type": ["partial_transcript"], "text": 7}',
    '{"message_type": "partial_transcript", "text": {"nested": true}}',
    '{"message_type": "committed_transcript_with_timestamps", "text": 1, "words": "x"}',
    '{"message_type": "session_started", "config": [1], "session_id": {}}',
    '{"message_type": "partial_transcript", "text": null, "words": [[[]]]}',
    '{"message_type": "committed_transcript_with_timestamps", "text": "", "language_code": 7}',
    '{"message_type": "session_started", "session_id": "again", "config": {"language_code": null}}',
    '{"message_type": "committed_transcript_entities", "text": "alpha", "entities": []}',
)


def check_params(q: dict[str, str], keyterms: list[str]) -> tuple[dict[str, Any], str]:
    """The session config (as session_started reports it), or why the parameters are refused."""
    if not q.get("model_id"):
        return {}, "model_id is required"
    if len(keyterms) > MAX_KEYTERMS:
        return {}, f"at most {MAX_KEYTERMS} keyterms are allowed"
    for term in keyterms:
        if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
            return {}, f"keyterm {term!r} must have 1 to {MAX_KEYTERM_CHARS} characters"
    audio_format = q.get("audio_format", "pcm_16000")
    if audio_format not in AUDIO_FORMATS:
        return {}, f"audio_format must be one of {', '.join(AUDIO_FORMATS)}"
    if audio_format != "pcm_16000":
        return {}, f"this test server only speaks pcm_16000, not {audio_format}"
    strategy = q.get("commit_strategy", "manual")
    if strategy not in ("manual", "vad"):
        return {}, "commit_strategy must be manual or vad"
    config: dict[str, Any] = {"sample_rate": SR, "audio_format": audio_format}
    config["language_code"] = q.get("language_code", "")
    config["commit_strategy"] = strategy
    for name, (kind, lo, hi, default) in RANGES.items():
        try:
            value = kind(q[name]) if name in q else default
        except ValueError:
            return {}, f"{name} must be a{'n integer' if kind is int else ' number'}"
        if not lo <= value <= hi:
            return {}, f"{name} must be between {lo} and {hi}"
        config[name] = value
    for name, default in BOOLEANS.items():
        value = q.get(name, str(default)).lower()
        if value not in ("true", "false"):
            return {}, f"{name} must be true or false"
        config[name] = value == "true"
    config["model_id"] = q["model_id"]
    config["keyterms"] = list(keyterms)
    return config, ""
