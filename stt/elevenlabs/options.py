"""The ElevenLabs engine's tunables, and the session URL they make with the settings.

Parameters are checked against the documented ranges when the options are made [API][SDK], so a
session is never refused for them (``invalid_request`` would end the stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from quantcoach.settings import Settings
from stt.elevenlabs.keyterms import DEFAULT_KEYTERMS, check_keyterms
from stt.pcm import STT_SAMPLE_RATE
from stt.retry import Backoff


@dataclass(frozen=True, slots=True)
class ElevenLabsOptions:
    """Tunables; the defaults are for production, tests shrink the timings."""

    chunk_ms: int = 200  # audio per input_audio_chunk (the docs advise 0.1-1 s)
    commit_strategy: Literal["vad", "manual"] = "vad"
    vad_silence_threshold_secs: float | None = 1.0  # 0.3-3.0; None: server default (1.5 s)
    vad_threshold: float | None = None  # 0.1-0.9; None: server default (0.4)
    min_speech_duration_ms: int | None = None  # 50-2000; None: server default (100)
    min_silence_duration_ms: int | None = None  # 50-2000; None: server default (100)
    include_timestamps: bool = True
    # None: ask for language detection exactly when no language_code is set (so finals say the language)
    include_language_detection: bool | None = None
    min_commit_gap_s: float = 1.0  # manual commits are never sent closer together (commit_throttled)
    connect_timeout_s: float = 10.0  # TCP + handshake + session_started
    twin_wait_s: float = 1.0  # how long a plain commit waits for its timestamped twin
    flush_timeout_s: float = 10.0  # end_input: commit sent, no answer -> the session failed
    stall_timeout_s: float = 15.0  # speech sent and nothing heard back for this long -> reconnect
    keepalive_s: float = 5.0  # no audio sent for this long -> empty input_audio_chunk
    partial_chunk_after_s: float = 0.3  # a short remainder is sent after this much push silence
    idle_commit_s: float = 3.0  # no pushes for this long with speech uncommitted -> commit it
    idle_close_s: float = 20.0  # this much quiet audio (or push silence) and nothing open -> close
    max_failures: int = 8  # consecutive failed sessions before the stream gives up
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    max_retained_s: float = 120.0  # cap on audio kept for re-sending (bounded memory)
    quiet_dbfs: float = -50.0  # 100 ms frames below this RMS are silence for settled()/idle logic
    settle_margin_s: float = 0.25  # settled() stays this far before the first speech frame
    tail_tolerance_s: float = 0.2  # loud frames this close after a committed word are its tail
    use_system_proxy: bool = True
    # An open utterance longer than this gets a manual commit at its quietest recent point (None: only
    # the server's VAD and its own limit cut). The same bound as Whisper's VAD ``max_utterance_s``.
    max_utterance_s: float | None = 20.0
    cut_lookback_s: float = 3.0  # the quietest 100 ms is looked for in this much audio before the bound
    keyterms: tuple[str, ...] = DEFAULT_KEYTERMS  # sent as repeated `keyterms`; () sends none

    def __post_init__(self) -> None:
        _in_range("chunk_ms", self.chunk_ms, 100, 1000)
        _in_range("vad_silence_threshold_secs", self.vad_silence_threshold_secs, 0.3, 3.0)
        _in_range("vad_threshold", self.vad_threshold, 0.1, 0.9)
        _in_range("min_speech_duration_ms", self.min_speech_duration_ms, 50, 2000)
        _in_range("min_silence_duration_ms", self.min_silence_duration_ms, 50, 2000)
        if not self.min_commit_gap_s >= 0:
            raise ValueError("min_commit_gap_s must not be negative")
        if self.max_utterance_s is not None and not self.max_utterance_s >= 2.0:
            raise ValueError("max_utterance_s must be at least 2 s (or None)")
        if not self.cut_lookback_s >= 0:
            raise ValueError("cut_lookback_s must not be negative")

    @property
    def chunk_samples(self) -> int:
        return max(1, STT_SAMPLE_RATE * self.chunk_ms // 1000)

    def backoff(self) -> Backoff:
        """Reconnect delays: ``backoff_initial_s * 2**(failures-1)``, capped at ``backoff_max_s``, times a
        random factor in [0.5, 1.0] (many streams must not reconnect in step). As a ``Backoff``: the
        same range is 0.75 of the nominal delay, jittered by a third either way."""
        return Backoff(
            initial_s=0.75 * self.backoff_initial_s,
            max_s=0.75 * self.backoff_max_s,
            multiplier=2.0,
            jitter=1 / 3,
        )


def _in_range(name: str, value: float | None, lo: float, hi: float) -> None:
    if value is not None and not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g} (ElevenLabs realtime), not {value!r}")


def session_url(settings: Settings, o: ElevenLabsOptions) -> str:
    """The realtime endpoint with our query parameters (never the key: that goes in a header).

    Raises ``KeytermError`` for keyterms beyond the documented limits.
    """
    keyterms = check_keyterms(o.keyterms)
    params: dict[str, str] = {
        "model_id": settings.elevenlabs_model_id,
        "audio_format": f"pcm_{STT_SAMPLE_RATE}",
        "commit_strategy": o.commit_strategy,
        "include_timestamps": "true" if o.include_timestamps else "false",
    }
    for name, value in (
        ("vad_silence_threshold_secs", o.vad_silence_threshold_secs),
        ("vad_threshold", o.vad_threshold),
        ("min_speech_duration_ms", o.min_speech_duration_ms),
        ("min_silence_duration_ms", o.min_silence_duration_ms),
    ):
        if value is not None:
            params[name] = f"{value:g}"
    if settings.elevenlabs_language:
        params["language_code"] = settings.elevenlabs_language
    detect = (
        not settings.elevenlabs_language
        if o.include_language_detection is None
        else o.include_language_detection
    )
    if detect:
        params["include_language_detection"] = "true"
    parts = urlsplit(settings.elevenlabs_base_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params and k != "keyterms"]
    query += [*params.items(), *(("keyterms", term) for term in keyterms)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), ""))


#: query parameters that carry a credential (a single-use ``token`` in ``ELEVENLABS_BASE_URL``)
SECRET_PARAMS = frozenset({"token", "xi-api-key", "api_key", "xi_api_key"})


def redacted_url(url: str) -> str:
    """``url`` for logs and reprs: credentials in its query or user info replaced by ``***``."""
    parts = urlsplit(url)
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query)]
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, quote_via=quote), ""))
