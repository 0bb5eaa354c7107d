"""Fixtures shared by the suite: the real Kafka-protocol broker (tansu) lives in tests/kafka_broker.py."""

pytest_plugins = ["tests.kafka_broker"]
