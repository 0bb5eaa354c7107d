"""Managed Kafka: SASL/TLS settings reach every client, secrets stay hidden, mistakes are one line.

The local broker (tansu) speaks PLAINTEXT only, so SASL is tested as far as it allows: the settings
become the clients' configuration (kafka-python and Bytewax's confluent-kafka connector), a client
configured for SASL against the plain broker fails fast with our one-line error, and the password
appears in no error or repr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connectors.kafka import client
from quantcoach.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "sasl-pass-do-not-print-9f3a"


def sasl_settings(servers: str = "broker.example:9093", **extra: str) -> Settings:
    return Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": servers, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "qc", "KAFKA_SASL_PASSWORD": PASSWORD,
        **extra,
    })  # fmt: skip


def test_security_settings_become_client_configuration(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = sasl_settings(KAFKA_SSL_CAFILE=str(ca))
    assert client.security_config(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "qc",
        "sasl_plain_password": PASSWORD, "ssl_cafile": str(ca),
    }  # fmt: skip
    assert client.confluent_config(settings) == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "qc",
        "sasl.password": PASSWORD, "ssl.ca.location": str(ca),
    }  # fmt: skip
    assert client.security_config(Settings.from_env({})) == {}  # PLAINTEXT: nothing added
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE: no such file"),
    ],
)
def test_bad_security_settings_are_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        Settings.from_env({"KAFKA_SASL_PASSWORD": PASSWORD, **env})
    assert PASSWORD not in str(err.value) and "\n" not in str(err.value)


def test_every_client_uses_the_configured_security(kafka_broker: str) -> None:
    built: list[dict[str, object]] = []
    client.configure(sasl_settings(kafka_broker, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT"))
    try:
        client.producer([kafka_broker], factory=lambda **config: built.append(config))
    finally:
        client.configure(Settings.from_env({}))
    assert built[0]["security_protocol"] == "SASL_PLAINTEXT" and built[0]["sasl_plain_password"] == PASSWORD
    client.producer([kafka_broker], factory=lambda **config: built.append(config))
    assert "security_protocol" not in built[1]  # configure() with PLAINTEXT settings clears it


def test_sasl_against_a_plaintext_broker_fails_fast_without_the_password(kafka_broker: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "KAFKA_SASL_USERNAME": "qc", "KAFKA_SASL_PASSWORD": PASSWORD}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "quantcoach.cli", "tail", "--kafka", kafka_broker],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode in (1, 2), proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "KAFKA_SECURITY_PROTOCOL" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
