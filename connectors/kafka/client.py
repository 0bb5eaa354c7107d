"""Every kafka-python client QuantCoach builds: producers, consumers and the topic admin, made here once.

kafka-python waits about 30 s in the constructor for a broker that does not answer; every client
built here bounds that to ``timeout_s`` and turns "no broker" into one ``KafkaUnavailable`` line that
names the servers. Callers add only what is theirs (acks, group, client id).

Managed Kafka: ``configure(settings)`` sets the process's connection security once (SASL/TLS from the
``KAFKA_SECURITY_*`` settings) and every client built afterwards uses it; all of a process's clients talk
to the one cluster its settings name. ``confluent_config`` is the same for Bytewax's own connector.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0

#: How often to look again for a topic that does not exist yet (a reader started before the flow).
TOPIC_WAIT_S = 1.0


class KafkaUnavailable(RuntimeError):
    """No Kafka broker answered at the configured bootstrap servers."""


_security: dict[str, Any] = {}


def security_config(settings: Any) -> dict[str, Any]:
    """kafka-python keyword arguments for the settings' SASL/TLS (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        out |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.reveal(),
        }
    if protocol.endswith("SSL") and settings.kafka_ssl_cafile:
        out["ssl_cafile"] = settings.kafka_ssl_cafile
    return out


def confluent_config(settings: Any) -> dict[str, str]:
    """The same security for confluent-kafka (Bytewax's ``bytewax.connectors.kafka``)."""
    plain = security_config(settings)
    names = {"security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanisms",
             "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
             "ssl_cafile": "ssl.ca.location"}  # fmt: skip
    return {names[k]: str(v) for k, v in plain.items()}


def configure(settings: Any) -> None:
    """Use the settings' connection security for every client this process builds from now on."""
    _security.clear()
    _security.update(security_config(settings))


def unavailable(
    servers: Sequence[str], timeout_s: float, exc: BaseException | None = None
) -> KafkaUnavailable:
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return KafkaUnavailable(
        f"Kafka is unreachable at {','.join(servers)}: no broker answered within {timeout_s:g} s{why}; "
        "is it running, and is KAFKA_BOOTSTRAP_SERVERS right?"
        + (" Do KAFKA_SECURITY_PROTOCOL and the SASL/TLS settings match the broker?" if _security else "")
    )


def bootstrap_config(client_cls: type, timeout_s: float) -> dict[str, Any]:
    """Keyword arguments that bound a kafka-python client's initial bootstrap to ``timeout_s``.

    kafka-python 3 names it ``bootstrap_timeout_ms``; 2.x bounds its version probe with
    ``api_version_auto_timeout_ms``. Either way the default is a ~30 s block in the constructor.
    """
    defaults: Mapping[str, Any] = getattr(client_cls, "DEFAULT_CONFIG", {})
    ms = max(1, int(timeout_s * 1000))
    if "bootstrap_timeout_ms" in defaults:
        return {"bootstrap_timeout_ms": ms}
    return {"api_version_auto_timeout_ms": ms}


def _build(
    cls: type,
    factory: Callable[..., Any],
    servers: Sequence[str],
    timeout_s: float,
    config: Mapping[str, Any],
) -> Any:
    try:
        merged = {**bootstrap_config(cls, timeout_s), **_security, **config}
        return factory(bootstrap_servers=list(servers), **merged)
    except KafkaError as exc:
        raise unavailable(servers, timeout_s, exc) from exc


def producer(
    servers: Sequence[str],
    *,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    factory: Callable[..., Any] | None = None,
    **config: Any,
) -> KafkaProducer:
    """A producer with ``config``; ``factory`` stands in for ``KafkaProducer`` (tests)."""
    return _build(KafkaProducer, factory or KafkaProducer, servers, timeout_s, config)


def consumer(
    servers: Sequence[str], *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, **config: Any
) -> KafkaConsumer:
    """A consumer with ``config``; offsets are never auto-committed unless ``config`` says so."""
    return _build(KafkaConsumer, KafkaConsumer, servers, timeout_s, {"enable_auto_commit": False, **config})


def wait_for_partitions(
    consumer: KafkaConsumer,
    topic: str,
    wanted: Iterable[int] | None = None,
    *,
    give_up: Callable[[], bool],
    wait: Callable[[float], object],
    every_s: float = TOPIC_WAIT_S,
) -> list[TopicPartition] | None:
    """The topic's partitions (only those in ``wanted``, when given) once it exists, checked every
    ``every_s`` with ``wait``; None if ``give_up()`` says so first."""
    wanted = None if wanted is None else set(wanted)
    while True:
        known = consumer.partitions_for_topic(topic) or set()
        chosen = sorted(known if wanted is None else wanted & known)
        if chosen:
            return [TopicPartition(topic, p) for p in chosen]
        if give_up():
            return None
        wait(every_s)


def ensure_topics(
    servers: Sequence[str],
    topics: Iterable[str],
    partitions: int,
    replication: int = 1,
    *,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> list[str]:
    """Create those of ``topics`` that do not exist yet; returns the names it created.

    Existing topics are left as they are (their partition count included). Safe to call from several
    workers at once: a topic another worker created first counts as existing.
    """
    wanted = list(dict.fromkeys(topics))
    admin = _build(
        KafkaAdminClient,
        KafkaAdminClient,
        servers,
        timeout_s,
        {"client_id": "quantcoach-admin", "request_timeout_ms": max(1000, int(timeout_s * 2000))},
    )
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        # One request per topic: kafka-python raises on the first per-topic error, which would hide
        # which of several topics were created.
        for topic in (t for t in wanted if t not in existing):
            try:
                admin.create_topics(
                    [NewTopic(topic, num_partitions=partitions, replication_factor=replication)]
                )
            except TopicAlreadyExistsError:
                continue  # another worker created it first: it exists, which is all we need
            created.append(topic)
        if created:
            log.info(
                "created Kafka topics %s (%d partitions, replication %d)", created, partitions, replication
            )
        return created
    finally:
        with contextlib.suppress(Exception):
            admin.close()
