"""``engine_for``: the process-wide speech-to-text engine of a name (one model, one network loop)."""

from __future__ import annotations

import threading

from quantcoach.settings import Settings
from stt.protocol import SttEngine, SttError

ENGINES = ("whisper", "elevenlabs", "noop")

_engines: dict[str, SttEngine] = {}
_lock = threading.Lock()


def engine_for(settings: Settings, name: str | None = None, *, throughput: bool = False) -> SttEngine:
    """The process-wide engine of that name (one model / one network loop per process). ``throughput``
    (a replay at ``--speed max``) gives Whisper's packed decode (``WHISPER_REPLAY_MODE``); live rooms and
    paced replays keep the per-utterance decode, with interim text every ``WHISPER_PARTIAL_S``."""
    name = name or settings.stt_engine
    key = f"{name}:throughput" if throughput and name == "whisper" else name
    with _lock:
        if key not in _engines:
            _engines[key] = _build(settings, name, throughput)
        return _engines[key]


def vocabulary(settings: Settings) -> tuple[str, ...]:
    """``STT_KEYTERMS``: empty = the bundled quant-finance terms, ``none`` = no vocabulary."""
    from stt.vocabulary import QUANT_TERMS, parse_terms

    raw = settings.stt_keyterms.strip()
    if not raw:
        return QUANT_TERMS
    return () if raw.lower() == "none" else parse_terms(raw)


def _build(settings: Settings, name: str, throughput: bool = False) -> SttEngine:
    # engines import their heavy dependencies (faster-whisper, websockets) only when chosen
    if name == "whisper":
        from stt.vad import VadParams
        from stt.vocabulary import hotwords
        from stt.whisper import WhisperEngine

        return WhisperEngine(
            settings.whisper_model_dir,
            language=settings.whisper_language,
            cpu_threads=settings.whisper_threads,
            vad=VadParams(max_utterance_s=settings.stt_max_utterance_s),
            mode=settings.whisper_replay_mode if throughput else "utterance",
            hotwords=hotwords(vocabulary(settings)),
            interim_s=None if throughput else (settings.whisper_partial_s or None),
            min_context_s=settings.whisper_min_context_s,
        )
    if name == "elevenlabs":
        from stt.elevenlabs.engine import ElevenLabsEngine
        from stt.elevenlabs.options import ElevenLabsOptions

        options = ElevenLabsOptions(
            max_utterance_s=settings.stt_max_utterance_s, keyterms=vocabulary(settings)
        )
        return ElevenLabsEngine(settings, options=options)
    if name == "noop":
        from stt.noop import NoopEngine

        return NoopEngine()
    raise SttError(f"unknown STT engine {name!r} (choose one of {', '.join(ENGINES)})")


def release(engine: SttEngine) -> None:
    """Close ``engine`` and forget it, so that a later ``engine_for`` in this process builds a new one."""
    with _lock:
        for key in [k for k, e in _engines.items() if e is engine]:
            del _engines[key]
    engine.close()
