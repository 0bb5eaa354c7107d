"""Speech-to-text engines behind one protocol (``protocol.py``); ``engine_for`` picks one by name."""

from __future__ import annotations

import threading

from connectors.stt.protocol import SttEngine, SttError, SttEvent, SttStream
from quantcoach.settings import Settings

__all__ = ["ENGINES", "SttEngine", "SttError", "SttEvent", "SttStream", "engine_for"]

ENGINES = ("whisper", "elevenlabs", "noop")

_engines: dict[str, SttEngine] = {}
_lock = threading.Lock()


def engine_for(settings: Settings, name: str | None = None) -> SttEngine:
    """The process-wide engine of that name (one model / one network loop per process)."""
    name = name or settings.stt_engine
    with _lock:
        if name not in _engines:
            _engines[name] = _build(settings, name)
        return _engines[name]


def _build(settings: Settings, name: str) -> SttEngine:
    if name == "whisper":
        from connectors.stt.whisper import WhisperEngine

        return WhisperEngine(
            settings.whisper_model_dir,
            language=settings.whisper_language,
            cpu_threads=settings.whisper_threads,
        )
    if name == "elevenlabs":
        from connectors.stt.elevenlabs import ElevenLabsEngine

        return ElevenLabsEngine(settings)
    if name == "noop":
        from connectors.stt.noop import NoopEngine

        return NoopEngine()
    raise SttError(f"unknown STT engine {name!r} (choose one of {', '.join(ENGINES)})")
