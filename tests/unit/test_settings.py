"""Settings: one place, checked at start, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantcoach.settings import Secret, Settings, SettingsError, env_names
from web.app import create_app

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_with_a_comment() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE)
    compose_only = {"QUANTCOACH_ENV_FILE"}  # read by docker compose (its env_file), not by quantcoach
    assert sorted(set(listed) - compose_only) == sorted(env_names())
    lines = text.splitlines()
    for name in listed:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
        assert lines[i - 1].startswith("# "), f"{name} has no comment above it"


def test_env_example_says_what_the_settings_say() -> None:
    # Each variable's comment is its field's description and its value the default: one source.
    lines = (ROOT / ".env.example").read_text().splitlines()
    for field in Settings.model_fields.values():
        env = str(field.validation_alias)
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{env}="))
        assert lines[i - 1] == f"# {field.description}", env
        default = field.default.reveal() if isinstance(field.default, Secret) else field.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert lines[i] == f"{env}={shown}"


def test_defaults_are_valid_and_embedded() -> None:
    s = Settings.from_env({})
    assert s.stt_engine == "whisper" and not s.kafka_configured and not s.livekit_configured
    assert (s.whisper_model_dir / "model.bin").is_file()  # the bundled model, no download


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WINDOW_S": "abc"}, "WINDOW_S must be a float"),
        ({"CHUNK_MS": "5"}, "CHUNK_MS must be between"),
        ({"STT_ENGINE": "google"}, "STT_ENGINE must be whisper, elevenlabs or noop"),
        ({"TOKEN_TTL_S": "30"}, "TOKEN_TTL_S must be >= 60"),
        ({"MAX_BODY_BYTES": "1e6"}, "MAX_BODY_BYTES must be an int, got '1e6'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "not HOST:PORT"),
        ({"LIVEKIT_URL": "livekit.example"}, "LIVEKIT_URL must start with"),
        ({"WEBHOOK_FORWARD": "maybe"}, "WEBHOOK_FORWARD must be a bool"),
        ({"DATABASE_URL": "data.db"}, "DATABASE_URL must be an SQLAlchemy URL"),
    ],
)
def test_malformed_values_fail_at_start_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as exc:
        Settings.from_env(env)
    assert "\n" not in str(exc.value)  # one line: the CLI prints it as ``error: ...``


def test_secrets_never_show() -> None:
    s = Settings.from_env(
        {
            "LIVEKIT_API_SECRET": "s3cr3t-value",
            "ELEVENLABS_API_KEY": "xi-key-123",
            "QUANTCOACH_API_KEYS": "k1,k2",
        }
    )
    shown = repr(s) + str(s) + str(s.public_view()) + f"{s.livekit_api_secret}"
    for secret in ("s3cr3t-value", "xi-key-123", "k1,k2"):
        assert secret not in shown
    assert s.livekit_api_secret.reveal() == "s3cr3t-value"
    assert s.api_key_list == ["k1", "k2"]


def test_plain_strings_work_for_every_field() -> None:
    # Secrets and comma-separated lists given in code as plain strings, then served: no AttributeError.
    s = Settings(
        api_keys="k1, k2",
        livekit_url="ws://127.0.0.1:7880",
        livekit_api_key="devkey",
        livekit_api_secret="a-secret-of-at-least-thirty-two-chars",
        cors_origins="https://a.example,https://b.example",
        kafka_bootstrap_servers="127.0.0.1:9092, 127.0.0.1:9093",
        chunk_ms="300",
        webhook_forward="false",
    )
    assert isinstance(s.livekit_api_secret, Secret) and s.livekit_api_secret.reveal().startswith("a-secret")
    assert s.api_key_list == ["k1", "k2"] and s.cors_origin_list == ["https://a.example", "https://b.example"]
    assert s.kafka_servers == ["127.0.0.1:9092", "127.0.0.1:9093"]
    assert s.chunk_ms == 300 and s.webhook_forward is False and s.livekit_configured
    app = create_app(s.with_(kafka_bootstrap_servers=""))
    assert app.test_client().get("/rooms").status_code == 401  # built, and the keys guard its routes
    assert s.with_(api_keys=Secret("k3")).api_key_list == ["k3"]


def test_settings_built_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_MS", "400")
    monkeypatch.setenv("WINDOW_S", "  ")
    assert Settings().chunk_ms == 50
    s = Settings.from_env(chunk_ms=250)
    assert s.chunk_ms == 250 and s.window_s == 20.0  # overrides win; blank values take the default
    assert Settings.from_env().chunk_ms == 400


def test_invalid_values_in_code_fail_the_same_way_without_showing_secrets() -> None:
    with pytest.raises(SettingsError, match=r"^LIVEKIT_API_SECRET must be a string, got \(hidden\)$"):
        Settings(livekit_api_secret=12345678)
    with pytest.raises(SettingsError, match=r"^unknown setting 'livekit_secret'$"):
        Settings(livekit_secret="x")
    with pytest.raises(SettingsError, match=r"^CHUNK_MS must be between 20 and 2000$"):
        Settings(api_keys="k").with_(chunk_ms=5)
