"""Fixtures shared by the suite: real servers started by the tests themselves (Kafka, PostgreSQL).

In CI (``CI`` set) nothing may be skipped: a missing broker, database or tool is a failure there, so a
green run always includes the integration tests. Locally a test may skip, with a reason that says how
to get what it needs.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.kafka_broker", "tests.postgres_server"]

_skipped: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: object) -> None:
    if in_ci() and _skipped:
        write = terminalreporter.write_line  # type: ignore[attr-defined]
        write(f"CI: {len(_skipped)} test(s) skipped, which fails the run: nothing may skip in CI", red=True)
        for nodeid in _skipped:
            write(f"  skipped: {nodeid}")
