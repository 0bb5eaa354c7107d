"""Fixtures shared by the suite: real servers started by the tests themselves (Kafka, PostgreSQL)."""

pytest_plugins = ["tests.kafka_broker", "tests.postgres_server"]
