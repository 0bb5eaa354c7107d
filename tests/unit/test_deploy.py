"""The docker-compose stack and Dockerfile, checked without a Docker engine (none runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from quantcoach.settings import Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_stack_has_every_part_with_a_pinned_official_image() -> None:
    assert {"livekit", "kafka", "kafka-topics", "postgres", "api", "flow", "store"} <= set(SERVICES)
    assert SERVICES["livekit"]["image"].startswith("livekit/livekit-server:v")
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:3.")
    for name in ("api", "flow", "store"):
        assert SERVICES[name]["build"] == "."
    assert SERVICES["edge"]["image"].startswith("nginx:1.")
    for name, svc in SERVICES.items():
        image = svc.get("image", "")
        assert not image.endswith(":latest") or "build" in svc, f"{name}: pin the image version"


def test_kafka_runs_in_kraft_mode_and_topics_are_created_on_start() -> None:
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    script = "\n".join(SERVICES["kafka-topics"]["command"])
    for topic in ("interview.transcripts", "interview.windows", "interview.rooms"):
        assert topic in script
    assert SERVICES["api"]["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in SERVICES.items():
        if name != "kafka-topics":
            assert "healthcheck" in svc and svc["healthcheck"]["test"], name


def test_environment_names_are_settings_and_in_env_example() -> None:
    known = set(env_names())
    example = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    for name in ("api", "flow", "store"):
        for var in SERVICES[name].get("environment", {}):
            assert var in known, f"{name}: {var} is not read by quantcoach/settings.py"
            assert var in example, f"{name}: {var} missing from .env.example"


def test_commands_are_real_entry_points() -> None:
    assert SERVICES["api"]["command"][:2] == ["quantcoach", "web"]
    assert SERVICES["store"]["command"][:2] == ["quantcoach", "store"]
    flow_cmd = " ".join(SERVICES["flow"]["command"])
    assert "bytewax.run" in flow_cmd and "flows.interview:flow" in flow_cmd


def test_ports_are_published_and_the_api_only_through_the_edge() -> None:
    assert "ports" not in SERVICES["api"], "gunicorn must not be published: nginx is the edge"
    assert "8080:8080" in SERVICES["edge"]["ports"]
    edge_env = SERVICES["edge"]["environment"]
    assert edge_env["QUANTCOACH_API_UPSTREAM"] == "api:8000"
    assert edge_env["MAX_BODY_BYTES"] == str(Settings.from_env({}).max_body_bytes)
    mounts = " ".join(SERVICES["edge"]["volumes"])
    assert "deploy/nginx/quantcoach.conf.template:/etc/nginx/templates/" in mounts
    assert "7880:7880" in SERVICES["livekit"]["ports"]
    assert any(p.startswith("9094") for p in SERVICES["kafka"]["ports"])


def test_livekit_webhook_points_at_the_api_and_keys_match() -> None:
    cfg = yaml.safe_load((ROOT / "deploy" / "livekit.yaml").read_text())
    env = SERVICES["api"]["environment"]
    assert cfg["keys"] == {env["LIVEKIT_API_KEY"]: env["LIVEKIT_API_SECRET"]}
    assert cfg["webhook"]["urls"] == ["http://api:8000/livekit/webhook"]


def test_dockerfile_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[12]-slim", text, re.MULTILINE)
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/health" in text


def compose_command() -> list[str] | None:
    """A real Compose implementation: the docker CLI plugin, else Debian's docker-compose (.ci/run)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file() -> None:
    compose = compose_command()
    if compose is None:
        pytest.skip("no Compose implementation here (apt-get install docker-compose)")
    proc = subprocess.run([*compose, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
