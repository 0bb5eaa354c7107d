"""Kafka, built once: clients (``client.py``), the records sink, the records reader, room events."""
