"""The suite's one conftest: the shared fixtures (tests/support/fixtures.py: Kafka, PostgreSQL) are
registered here, once, and a skipped test fails the run in CI.

In CI (``CI`` set) nothing may be skipped: a missing broker, database or tool is a failure there, so a
green run always includes the integration tests. Locally a test may skip, with a reason that says how
to get what it needs.
"""

from __future__ import annotations

import pytest

# before anything imports them: their asserts report like a test's own
pytest.register_assert_rewrite("harness", "tests.support")

from tests.support.ci import in_ci  # noqa: E402

pytest_plugins = ["tests.support.fixtures"]

_skipped: list[str] = []


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
