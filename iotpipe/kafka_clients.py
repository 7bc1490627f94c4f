"""Kafka clients built from the configuration, with kafka-python's own setting names."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from iotpipe.config import Config
from iotpipe.wire import input_record_limit

log = logging.getLogger("iotpipe.kafka")

T = TypeVar("T")


def producer(config: Config, **settings: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and never reorders or duplicates on retry."""
    defaults = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": config.linger_ms,
        "max_request_size": config.max_request_size,
        "reconnect_backoff_max_ms": config.reconnect_backoff_max_ms,
    }
    return KafkaProducer(bootstrap_servers=config.bootstrap_servers, **config.kafka_security, **(defaults | settings))


def consumer(config: Config, *topics: str, **settings: Any) -> KafkaConsumer:
    """A consumer that commits only when told to, and starts at the beginning of a new group."""
    defaults = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": config.max_poll_records,
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
        "fetch_max_bytes": 16 * config.max_request_size,
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "reconnect_backoff_max_ms": config.reconnect_backoff_max_ms,
    }
    return KafkaConsumer(
        *topics, bootstrap_servers=config.bootstrap_servers, **config.kafka_security, **(defaults | settings)
    )


def connected(create: Callable[[], T], config: Config, stopping: threading.Event) -> T:
    """``create()`` a client, waiting with backoff while no broker answers: an outage, not a crash."""
    delay = config.retry_backoff_initial_s
    while True:
        try:
            return create()
        except KafkaError as error:
            if stopping.is_set():
                raise
            log.warning("waiting for Kafka at %s: %s", config.bootstrap_servers, error)
            stopping.wait(delay)
            delay = min(delay * 2, config.retry_backoff_max_s)


def partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition a keyed record lands in: the default partitioner's murmur2 hash of the key."""
    return sorted(partitions)[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def topic_configs(config: Config, topic: str) -> dict[str, str]:
    """Input topics take records small enough to be dead-lettered with their context headers."""
    if topic in (config.images_topic, config.predictions_topic):
        return {"max.message.bytes": str(input_record_limit(config.max_request_size))}
    return {}


def ensure_topics(config: Config) -> list[str]:
    """Create the pipeline's topics where missing; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=config.bootstrap_servers, **config.kafka_security)
    try:
        existing = set(admin.list_topics())
        wanted = [
            config.images_topic,
            config.predictions_topic,
            config.dead_letter_topic,
            config.predictions_dead_letter_topic,
        ]
        missing = [name for name in wanted if name not in existing]
        new = [
            NewTopic(
                name,
                num_partitions=config.topic_partitions,
                replication_factor=1,
                topic_configs=topic_configs(config, name),
            )
            for name in missing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        return missing
    finally:
        admin.close()
