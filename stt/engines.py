"""``engine_for``: the process-wide speech-to-text engine of a name (one model, one network loop)."""

from __future__ import annotations

import threading

from quantcoach.settings import Settings
from stt.protocol import SttEngine, SttError

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
    # engines import their heavy dependencies (faster-whisper, websockets) only when chosen
    if name == "whisper":
        from stt.whisper import WhisperEngine

        return WhisperEngine(
            settings.whisper_model_dir,
            language=settings.whisper_language,
            cpu_threads=settings.whisper_threads,
        )
    if name == "elevenlabs":
        from stt.elevenlabs.engine import ElevenLabsEngine

        return ElevenLabsEngine(settings)
    if name == "noop":
        from stt.noop import NoopEngine

        return NoopEngine()
    raise SttError(f"unknown STT engine {name!r} (choose one of {', '.join(ENGINES)})")
