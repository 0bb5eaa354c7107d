"""``run_gunicorn``: the config file is applied, and a real gunicorn serves the app on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.ports import free_port
from quantcoach.settings import Settings
from tests.support.twirp import API_KEY, API_SECRET, TEST_API_KEY, TwirpRoomServer
from web.serve import _Server, run_gunicorn

ROOT = Path(__file__).resolve().parents[2]


def test_config_file_then_arguments() -> None:
    cfg = _Server(Settings(), {"bind": ["127.0.0.1:9999"], "workers": 3}).cfg
    from gunicorn.workers.gthread import ThreadWorker

    from web.gunicorn_hardening import JsonErrorWorker, SafeAccessLogger

    assert cfg.worker_class is JsonErrorWorker and issubclass(cfg.worker_class, ThreadWorker)
    assert cfg.logger_class is SafeAccessLogger and cfg.threads >= 2
    assert cfg.bind == ["127.0.0.1:9999"] and cfg.workers == 3
    assert cfg.accesslog == "-" and "%(U)s" in cfg.access_log_format and "%(q)s" not in cfg.access_log_format
    assert cfg.timeout == 30 and cfg.graceful_timeout > 0 and cfg.preload_app is False
    assert cfg.loglevel == "info"


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        run_gunicorn(Settings(), "127.0.0.1:0", 0)


@pytest.fixture
def twirp() -> Iterator[TwirpRoomServer]:
    with TwirpRoomServer() as srv:
        yield srv


def test_serves_under_gunicorn_and_stops_cleanly(twirp: TwirpRoomServer) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LIVEKIT_URL": twirp.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "QUANTCOACH_API_KEYS": TEST_API_KEY,
    }
    code = (
        "import sys; from quantcoach.settings import Settings; from web.serve import run_gunicorn; "
        f"sys.exit(run_gunicorn(Settings.from_env(), '127.0.0.1:{port}', 2))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(f"{base}/health", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):  # still starting (a loaded machine)
                assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["livekit_reachable"] is True
        auth = {"Authorization": f"Bearer {TEST_API_KEY}"}
        tok = requests.post(
            f"{base}/tokens/generate?probe=1",
            json={"room_name": "mock-1", "participant_identity": "a", "role": "candidate"},
            headers=auth,
            timeout=5,
        )
        assert tok.status_code == 200
        created = requests.post(f"{base}/rooms/create", json={"room_name": "g-1"}, headers=auth, timeout=5)
        assert created.status_code == 200 and "g-1" in twirp.state.rooms
        assert requests.get(f"{base}/rooms", timeout=5).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    log = out.decode()
    assert proc.returncode == 0, log
    assert "Using worker: web.gunicorn_hardening.JsonErrorWorker" in log
    assert "web.rooms: room created: g-1" in log  # app logs reach the server's output
    assert '"POST /tokens/generate HTTP/1.1" 200' in log  # the access log, path without query
    assert "probe=1" not in log
    for secret in (TEST_API_KEY, API_SECRET):
        assert secret not in log
