"""A real PostgreSQL server on a free loopback port, from Debian's `postgresql` package.

`.ci/run` installs the package. Without it ``postgres_server`` raises ``PostgresUnavailable``; the
``postgres_url`` fixture (tests/support/fixtures.py) fails in CI and skips on a developer machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

from harness.ports import free_port


def bin_dir() -> str | None:
    """The directory of the server binaries (initdb, pg_ctl, pg_isready), or None if not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresUnavailable(RuntimeError):
    pass


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway server (fsync off) on a free loopback port; yields its SQLAlchemy URL."""
    bindir = bin_dir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")
    data = tempfile.mkdtemp(prefix="qc-pg-")
    # initdb refuses to run as root: run the server as the package's postgres user when we are root
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
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
