"""Waiting on the running test stack: CouchDB documents and dead-letter records."""

from __future__ import annotations

import time
import uuid

from kafka import TopicPartition

from iotpipe import couch, kafka_clients
from iotpipe.config import Config
from iotpipe.wire import REASON_HEADER, decode_headers


def unique_producer_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for_documents(config: Config, producer_id: str, expected: int, timeout_s: float = 120) -> list[dict]:
    """The stored results of ``producer_id`` once there are ``expected`` of them (or the deadline)."""
    db = couch.database(config)
    deadline = time.monotonic() + timeout_s
    while True:
        documents = couch.results_of(db, producer_id)
        if len(documents) >= expected or time.monotonic() > deadline:
            return documents
        time.sleep(0.5)


def dead_letters(config: Config, topic: str, image_ids: set[str], timeout_s: float = 60) -> dict[str, str]:
    """Reason header of each dead-lettered record among ``image_ids`` (ce_id), read from the start."""
    consumer = kafka_clients.consumer(config, group_id=None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(reasons) < len(image_ids) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    # only the records asked about are decoded: others (a soak's) may carry headers that are not UTF-8
                    image_id = dict(record.headers).get("ce_id", b"").decode("utf-8", "replace")
                    if image_id in image_ids:
                        reasons[image_id] = decode_headers(record.headers).get(REASON_HEADER, "")
    finally:
        consumer.close()
    return reasons
