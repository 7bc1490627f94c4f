"""Kafka clients built from the configuration, with kafka-python's own setting names."""

from __future__ import annotations

import contextlib
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from iotpipe.config import Config


def producer(config: Config, **settings: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and never reorders or duplicates on retry."""
    defaults = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": config.linger_ms,
        "max_request_size": config.max_request_size,
    }
    return KafkaProducer(bootstrap_servers=config.bootstrap_servers, **(defaults | settings))


def consumer(config: Config, *topics: str, **settings: Any) -> KafkaConsumer:
    """A consumer that commits only when told to, and starts at the beginning of a new group."""
    defaults = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": config.max_poll_records,
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
        "fetch_max_bytes": 16 * config.max_request_size,
    }
    return KafkaConsumer(*topics, bootstrap_servers=config.bootstrap_servers, **(defaults | settings))


def ensure_topics(config: Config) -> list[str]:
    """Create the pipeline's topics where missing; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        wanted = [
            config.images_topic,
            config.predictions_topic,
            config.dead_letter_topic,
            config.predictions_dead_letter_topic,
        ]
        missing = [name for name in wanted if name not in existing]
        new = [NewTopic(name, num_partitions=config.topic_partitions, replication_factor=1) for name in missing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        return missing
    finally:
        admin.close()
