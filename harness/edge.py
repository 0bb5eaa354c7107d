"""A real nginx edge rendered from deploy/nginx/quantcoach.conf.template, in front of a real gunicorn.

The template is rendered by the real ``envsubst`` with only the three names the official nginx image
would substitute, wrapped in a minimal ``nginx.conf`` (temp paths and logs under a private directory)
and started in the foreground. A missing nginx or envsubst raises ``ToolMissing``, which says what to
install; tests/support/edge.py makes that a failure in CI (``CI=true``) and a skip locally.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "nginx" / "quantcoach.conf.template"
TEMPLATE_VARS = ("QUANTCOACH_API_UPSTREAM", "EDGE_PORT", "MAX_BODY_BYTES", "EDGE_ACCESS_LOG")
API_KEY = "edge-test-key-0123456789"


class ToolMissing(RuntimeError):
    """A binary the edge needs (nginx, envsubst) is not installed; the message says which package has it."""


def need(binary: str, package: str) -> str:
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    raise ToolMissing(f"{binary} is not installed (apt-get install {package})")


def render(upstream: str, port: int, max_body: int, access_log: str = "/dev/stdout") -> str:
    """The template as the nginx image renders it: envsubst, restricted to our names."""
    env = {
        **os.environ,
        "QUANTCOACH_API_UPSTREAM": upstream,
        "EDGE_PORT": str(port),
        "MAX_BODY_BYTES": str(max_body),
        "EDGE_ACCESS_LOG": access_log,
    }
    names = " ".join(f"${{{n}}}" for n in TEMPLATE_VARS)
    proc = subprocess.run(
        [need("envsubst", "gettext-base"), names],
        input=TEMPLATE.read_text(),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return proc.stdout


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s} s:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Nginx:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        return (self.workdir / "error.log").read_text(errors="replace")

    def access_log(self) -> str:
        return (self.workdir / "access.log").read_text(errors="replace")


@contextlib.contextmanager
def nginx_edge(upstream: str, workdir: Path, max_body: int = 65536) -> Iterator[Nginx]:
    binary = need("nginx", "nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o777)  # nginx's workers drop root; they write request bodies under here
    port = free_port()
    (workdir / "quantcoach.conf").write_text(render(upstream, port, max_body, str(workdir / "access.log")))
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"  access_log {workdir}/access.log;\n"
        + "".join(f"  {kind}_temp_path {workdir}/{kind};\n" for kind in ("client_body", "proxy"))
        + "".join(f"  {kind}_temp_path {workdir}/{kind};\n" for kind in ("fastcgi", "uwsgi", "scgi"))
        + f"  include {workdir}/quantcoach.conf;\n}}\n"
    )
    args = ["-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    check = subprocess.run([binary, "-t", *args], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the rendered template:\n{check.stderr}")
    log = workdir / "nginx.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, log)
        yield Nginx(port, workdir, proc)
    finally:
        stop(proc, signal.SIGQUIT)


@dataclass
class Gunicorn:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.upstream}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def gunicorn_api(workdir: Path, threads: int = 4, **env_extra: str) -> Iterator[Gunicorn]:
    """``quantcoach web`` as a user runs it, on a free port, with a SQLite store in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "KAFKA_", "DATABASE_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        QUANTCOACH_API_KEYS=API_KEY,
        DATABASE_URL=f"sqlite:///{workdir / 'store.db'}",
        WEB_THREADS=str(threads),
        LOG_LEVEL="INFO",
        **env_extra,
    )
    log = workdir / f"gunicorn-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "quantcoach.cli", "web", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, log)
        yield Gunicorn(port, proc, log)
    finally:
        stop(proc, signal.SIGQUIT)
