"""A real PostgreSQL server on a free loopback port, from Debian's `postgresql` package.

`.ci/run` installs the package, so in CI (CI=true) a missing binary is a failure; on a developer
machine without it the tests that need it skip with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresUnavailable(RuntimeError):
    pass


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway server (fsync off) on a free loopback port; yields its SQLAlchemy URL."""
    bindir = _bin_dir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")
    data = tempfile.mkdtemp(prefix="qc-pg-")
    # initdb refuses to run as root: run the server as the package's postgres user when we are root
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "qc", "--no-sync"],
            check=True,
            capture_output=True,
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
        subprocess.run(
            [*as_user, f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", f"{data}/log", "-w", "start"],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 20
        while subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
            if time.monotonic() > deadline:
                raise PostgresUnavailable("PostgreSQL did not become ready")
            time.sleep(0.2)
        yield f"postgresql+psycopg://qc@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if _bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI: .ci/run should have installed `postgresql`")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with postgres_server() as url:
        yield url
