"""Kafka clients built from the configuration, with kafka-python's own setting names."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from prometheus_client import Gauge

from iotpipe.config import Config
from iotpipe.service import mark_ready, retry_until_done
from iotpipe.wire import Headers

log = logging.getLogger("iotpipe.kafka")


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


def partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition a keyed record lands in: the default partitioner's murmur2 hash of the key."""
    return sorted(partitions)[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


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
        new = [NewTopic(name, num_partitions=config.topic_partitions, replication_factor=1) for name in missing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        return missing
    finally:
        admin.close()


def process_batches(
    consumer: KafkaConsumer,
    handle: Callable[[list[ConsumerRecord]], None],
    stopping: threading.Event,
    ready_file: Path | None = None,
    lag: Gauge | None = None,
) -> None:
    """Poll micro-batches and hand each to ``handle``; commit only what was handled.

    A batch's offsets are committed after ``handle`` returns, which is after its output was
    acknowledged, so a crash replays it rather than losing it. The commit is asynchronous (off
    the latency path); a failed one only means a replay, which the idempotent writes absorb.
    On a clean stop the last positions are committed synchronously.
    """
    while not stopping.is_set():
        # A broker outage raises from poll; wait it out rather than die (nothing was taken yet).
        batch = retry_until_done(lambda: consumer.poll(timeout_ms=500), (KafkaError,), stopping, log)
        if ready_file is not None:
            mark_ready(ready_file)
            ready_file = None
        records = [record for partition in batch.values() for record in partition]
        if records and replay_on_failure(consumer, batch, handle, records, stopping):
            consumer.commit_async(callback=_log_failed_commit)
        if lag is not None:
            with contextlib.suppress(KafkaError):  # unknown during a broker outage; kept as it was
                lag.set(records_behind(consumer))
    consumer.commit()


class NotAcknowledged(RuntimeError):
    """Kafka did not acknowledge some output of a batch; the batch is processed again."""


def send_all(producer: KafkaProducer, messages: list[tuple[str, bytes, bytes, Headers]]) -> None:
    """Send (topic, key, value, headers) messages and wait until Kafka has acknowledged every one."""
    try:
        futures = [producer.send(topic, key=k, value=v, headers=h) for topic, k, v, h in messages]
        producer.flush()
    except KafkaError as error:  # e.g. no metadata within max_block_ms while the broker is away
        raise NotAcknowledged(f"Kafka refused {len(messages)} records: {error}") from None
    failures = [future.exception for future in futures if future.failed()]
    if failures:
        raise NotAcknowledged(f"Kafka did not acknowledge {len(failures)} of {len(futures)} records: {failures[0]}")


def replay_on_failure(
    consumer: KafkaConsumer,
    batch: dict,
    handle: Callable[[list[ConsumerRecord]], None],
    records: list[ConsumerRecord],
    stopping: threading.Event,
) -> bool:
    """Handle the records; if their output was not acknowledged, rewind to the batch's start. True if handled."""
    try:
        handle(records)
        return True
    except NotAcknowledged as error:
        log.warning("%s; processing the batch again", error)
        for partition, records in batch.items():
            consumer.seek(partition, records[0].offset)
        stopping.wait(1.0)
        return False


def records_behind(consumer: KafkaConsumer) -> int:
    """Consumer lag from the last fetch responses' high-water marks (no extra request)."""
    behind = 0
    for partition in consumer.assignment():
        highwater = consumer.highwater(partition)
        if highwater is not None:
            behind += max(highwater - consumer.position(partition), 0)
    return behind


def _log_failed_commit(offsets, response) -> None:
    if isinstance(response, Exception):
        log.warning("offset commit failed (%s); those records will be delivered again", response)
