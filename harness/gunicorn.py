"""The API under real gunicorn, and a small client for its event streams (SSE).

``GunicornServer`` runs ``web.serve.run_gunicorn`` in a subprocess (one gthread worker on a free loopback
port, the production path: web/gunicorn_conf.py) with SSE timings chosen by the caller; ``SSEClient``
reads a stream with requests, each block as soon as its bytes arrive. The tests
(tests/integration/test_web_*.py) and bench/bench_store.py start them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from harness.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "transcripts-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FAST_SSE = {"SSE_POLL_S": 0.05, "SSE_KEEPALIVE_S": 0.3, "SSE_MAX_S": 30.0, "SSE_RETRY_MS": 500}


# --- a small SSE client -----------------------------------------------------------------------------
@dataclass
class Block:
    """One blank-line-terminated block of an event stream."""

    id: int | None = None
    event: str = ""
    data: str = ""
    retry: int | None = None
    comment: str = ""
    at: float = field(default=0.0, compare=False)  # monotonic time it was read

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


def parse_block(text: str, at: float = 0.0) -> Block:
    b = Block(at=at)
    for line in text.split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            b.comment = value
        elif name == "id":
            b.id = int(value)
        elif name == "event":
            b.event = value
        elif name == "data":
            assert not b.data, "one data line per event"
            b.data = value
        elif name == "retry":
            b.retry = int(value)
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return b


def parse_blocks(body: str) -> list[Block]:
    assert body.endswith("\n\n")
    return [parse_block(t) for t in body[:-2].split("\n\n")]


class SSEClient:
    """Reads an event stream with requests (stream=True): each block as soon as its bytes arrive."""

    def __init__(
        self, url: str, last_event_id: int | None = None, read_timeout_s: float = 5.0, auth: bool = True
    ) -> None:
        headers = dict(AUTH) if auth else {}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.resp = requests.get(url, headers=headers, stream=True, timeout=(5, read_timeout_s))
        self._chunks = self.resp.iter_content(chunk_size=None)  # chunks as they come, not 512 B reads
        self._buf = b""

    def next_block(self) -> Block | None:
        """The next block, or None when the server ended the stream."""
        while b"\n\n" not in self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                assert not self._buf, "stream ended mid-block"
                return None
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n\n", 1)
        return parse_block(raw.decode("utf-8"), time.monotonic())

    def events(self, n: int, within_s: float = 5.0) -> list[Block]:
        """The next ``n`` events (comments and retry blocks skipped)."""
        out: list[Block] = []
        deadline = time.monotonic() + within_s
        while len(out) < n:
            assert time.monotonic() < deadline, f"only {len(out)} of {n} events within {within_s}s"
            b = self.next_block()
            assert b is not None, "stream ended"
            if b.event:
                out.append(b)
        return out

    def until_idle(self, within_s: float = 5.0) -> list[Block]:
        """Events up to the first keep-alive comment: everything the server had to send."""
        out: list[Block] = []
        deadline = time.monotonic() + within_s
        while True:
            assert time.monotonic() < deadline, "no keep-alive"
            b = self.next_block()
            assert b is not None, "stream ended"
            if b.comment == "keep-alive":
                return out
            if b.event:
                out.append(b)

    def close(self) -> None:
        self.resp.close()  # closes the socket: the server sees EOF, then EPIPE on its next write

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the app under real gunicorn --------------------------------------------------------------------
# Settings has no SSE_* fields (they are app config), so the launcher wraps create_app to pass the
# test's timings; everything else is the production path: run_gunicorn, web/gunicorn_conf.py, gthread.
_LAUNCHER = """
import json, sys
import web.app
from quantcoach.settings import Settings
from web.serve import run_gunicorn

config = json.loads(sys.argv[2])
_create_app = web.app.create_app
web.app.create_app = lambda settings, **kw: _create_app(settings, config=config, **kw)
sys.exit(run_gunicorn(Settings.from_env(), sys.argv[1], 1))
"""


class GunicornServer:
    """``run_gunicorn`` in a subprocess: one gthread worker on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        threads: int = 2,
        config: dict[str, float] | None = None,
        timeout_s: int = 1,
        max_streams: int | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "KAFKA_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            DATABASE_URL=database_url,
            QUANTCOACH_API_KEYS=API_KEY,
            WEB_THREADS=str(threads),
            # streams may take every thread here unless a test sets the cap (tests of starvation)
            SSE_MAX_STREAMS=str(max_streams or threads),
            WEB_TIMEOUT_S=str(timeout_s),  # shorter than the streams: they must not count as hung
            LOG_LEVEL="INFO",
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, f"127.0.0.1:{self.port}", json.dumps(config or FAST_SSE)],
                cwd=workdir,  # a relative DATABASE_URL would land here, never in the checkout
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{self.base}/health", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # quick shutdown: an open stream must not hold it up
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
