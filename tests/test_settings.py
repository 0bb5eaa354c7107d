"""Settings: one place, checked at start, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantcoach.settings import Settings, SettingsError, env_names

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_with_a_comment() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE)
    compose_only = {"QUANTCOACH_ENV_FILE"}  # read by docker compose (its env_file), not by quantcoach
    assert sorted(set(listed) - compose_only) == sorted(env_names())
    lines = text.splitlines()
    for name in listed:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
        assert lines[i - 1].startswith("# "), f"{name} has no comment above it"


def test_defaults_are_valid_and_embedded() -> None:
    s = Settings.from_env({})
    assert s.stt_engine == "whisper" and not s.kafka_configured and not s.livekit_configured
    assert (s.whisper_model_dir / "model.bin").is_file()  # the bundled model, no download


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WINDOW_S": "abc"}, "WINDOW_S must be a float"),
        ({"CHUNK_MS": "5"}, "CHUNK_MS must be between"),
        ({"STT_ENGINE": "google"}, "STT_ENGINE must be whisper or elevenlabs"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "not HOST:PORT"),
        ({"LIVEKIT_URL": "livekit.example"}, "LIVEKIT_URL must start with"),
        ({"WEBHOOK_FORWARD": "maybe"}, "WEBHOOK_FORWARD must be a bool"),
        ({"DATABASE_URL": "data.db"}, "DATABASE_URL must be an SQLAlchemy URL"),
    ],
)
def test_malformed_values_fail_at_start_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


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
