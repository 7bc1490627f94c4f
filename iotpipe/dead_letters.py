"""Dead letters read back: summarized by reason, and replayed to their source topic after a fix.

A dead letter keeps the original key, value and headers plus the context headers of
``iotpipe.wire.dead_letter_headers``. A dead-letter topic may hold anything (anyone who can
write to Kafka can write there), so parsing never fails: what is missing or garbled is ``None``.

A replayed record goes back to its origin topic without the context headers and with
``REPLAYS_HEADER`` counted up. The pipeline keeps that header when it dead-letters the record
again, so a record that keeps failing stops being replayed after ``MAX_REPLAYS``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.wire import (
    ATTEMPTS_HEADER,
    DEAD_LETTER_PREFIX,
    DEAD_LETTER_TIME_HEADER,
    ORIGIN_TOPIC_HEADER,
    REASON_HEADER,
    REPLAYS_HEADER,
    STAGE_HEADER,
    Headers,
    cut,
    parse_time,
)

# A record replayed this often and dead-lettered each time is not helped by another replay.
MAX_REPLAYS = 3
EXAMPLE_IDS = 3
NO_REASON = "(no reason header)"


def sources(config: Config) -> dict[str, str]:
    """Each dead-letter topic of the pipeline and the input topic its records come from."""
    return {
        config.dead_letter_topic: config.images_topic,
        config.predictions_dead_letter_topic: config.predictions_topic,
    }


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, with its context headers parsed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    time: float  # when it was dead-lettered, in seconds since the epoch
    reason: str
    id: str | None = None  # its ce_id
    stage: str | None = None
    attempts: int | None = None
    origin_topic: str | None = None
    replays: int = 0

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> DeadLetter:
        """Parse a consumer record; missing or garbled headers become None (or 0 replays)."""
        headers = [(name, value) for name, value in record.headers or [] if isinstance(value, bytes)]
        text = {name: value.decode(errors="replace") for name, value in headers}
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=headers,
            time=_dead_letter_time(text.get(DEAD_LETTER_TIME_HEADER), record.timestamp),
            reason=cut(text.get(REASON_HEADER) or NO_REASON),
            id=text.get("ce_id") or None,
            stage=text.get(STAGE_HEADER) or None,
            attempts=_count(text.get(ATTEMPTS_HEADER)),
            origin_topic=text.get(ORIGIN_TOPIC_HEADER) or None,
            replays=_count(text.get(REPLAYS_HEADER)) or 0,
        )

    @property
    def name(self) -> str:
        """Its ce_id, or where it lies when it has none."""
        return self.id if self.id is not None else f"{self.topic}/{self.partition}@{self.offset}"


def _dead_letter_time(header: str | None, timestamp_ms: int | None) -> float:
    """When it was dead-lettered: the context header, else the Kafka timestamp, else the epoch."""
    readings = (lambda: parse_time(header or ""), lambda: max(timestamp_ms or 0, 0) / 1000)
    for reading in readings:
        with contextlib.suppress(ValueError, OverflowError, OSError):
            seconds = reading()
            datetime.fromtimestamp(seconds, UTC)  # a date that can be printed
            return seconds
    return 0.0


def _count(text: str | None) -> int | None:
    try:
        count = int(text or "")
    except ValueError:
        return None
    return count if count >= 0 else None


def read_dead_letters(config: Config, topics: Sequence[str]) -> list[DeadLetter]:
    """Every record of ``topics`` up to their end offsets at the time of the call; never waits for new ones."""
    try:
        consumer = kafka_clients.consumer(config, group_id=None)
    except KafkaError as error:
        raise _kafka_failed(config, f"reading {', '.join(topics)}", error) from None
    try:
        partitions = [partition for topic in topics for partition in _partitions(consumer, topic, config)]
        records = _read_to_end(consumer, partitions, config)
    except KafkaError as error:
        raise _kafka_failed(config, f"reading {', '.join(topics)}", error) from None
    finally:
        consumer.close()
    return [DeadLetter.from_record(record) for record in records]


def _kafka_failed(config: Config, doing: str, error: KafkaError) -> RuntimeError:
    return RuntimeError(
        f"{doing}: Kafka at {config.bootstrap_servers} failed ({error!r}); nothing was changed, "
        "run it again once `iotpipe status` shows kafka healthy"
    )


def _partitions(consumer: KafkaConsumer, topic: str, config: Config) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ValueError(
            f"topic {topic!r} does not exist at {config.bootstrap_servers}; "
            f"the dead-letter topics are {', '.join(sources(config))}"
        )
    return [TopicPartition(topic, partition) for partition in sorted(partitions)]


def _read_to_end(consumer: KafkaConsumer, partitions: list[TopicPartition], config: Config) -> list[ConsumerRecord]:
    consumer.assign(partitions)
    end = consumer.end_offsets(partitions)
    consumer.seek_to_beginning()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + config.request_timeout_s
    while unread := [partition for partition in partitions if consumer.position(partition) < end[partition]]:
        consumer.pause(*(set(partitions) - set(unread)))
        batch = consumer.poll(timeout_ms=500)
        for partition, fetched in batch.items():
            records += [record for record in fetched if record.offset < end[partition]]
        if batch:
            deadline = time.monotonic() + config.request_timeout_s
        elif time.monotonic() > deadline:
            raise RuntimeError(
                f"no record from {', '.join(sorted({p.topic for p in unread}))} for {config.request_timeout_s:.0f} s "
                f"although its end offset is further on; is Kafka at {config.bootstrap_servers} well?"
            )
    return records


@dataclass(frozen=True)
class ReasonGroup:
    """The dead letters that share one reason."""

    reason: str
    count: int
    ids: tuple[str, ...]  # distinct, in the order they were dead-lettered
    stages: tuple[str, ...]
    origin_topics: tuple[str, ...]
    first: float
    last: float

    @property
    def examples(self) -> tuple[str, ...]:
        return self.ids[:EXAMPLE_IDS]


@dataclass(frozen=True)
class Summary:
    groups: tuple[ReasonGroup, ...]  # the most dead letters first
    per_topic: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.per_topic.values())

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        """JSON-ready: totals, and the ``limit`` largest groups (all when None)."""
        return {
            "total": self.total,
            "per_topic": self.per_topic,
            "distinct_reasons": len(self.groups),
            "reasons": [
                {
                    "reason": group.reason,
                    "count": group.count,
                    "distinct_ids": len(group.ids),
                    "examples": [cut(name) for name in group.examples],
                    "stages": list(group.stages),
                    "origin_topics": list(group.origin_topics),
                    "first": iso(group.first),
                    "last": iso(group.last),
                }
                for group in self.groups[:limit]
            ],
        }


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summarize(dead_letters: Iterable[DeadLetter], since: float | None = None) -> Summary:
    """Dead letters (those dead-lettered at ``since`` or later) grouped by reason, and counted per topic."""
    chosen = sorted((d for d in dead_letters if since is None or d.time >= since), key=lambda d: d.time)
    by_reason: dict[str, list[DeadLetter]] = {}
    per_topic: dict[str, int] = {}
    for dead_letter in chosen:
        by_reason.setdefault(dead_letter.reason, []).append(dead_letter)
        per_topic[dead_letter.topic] = per_topic.get(dead_letter.topic, 0) + 1
    groups = [_group(reason, members) for reason, members in by_reason.items()]
    return Summary(groups=tuple(sorted(groups, key=lambda group: -group.count)), per_topic=per_topic)


def _group(reason: str, members: list[DeadLetter]) -> ReasonGroup:
    return ReasonGroup(
        reason=reason,
        count=len(members),
        ids=tuple(dict.fromkeys(d.id for d in members if d.id is not None)),
        stages=tuple(sorted({d.stage for d in members if d.stage is not None})),
        origin_topics=tuple(sorted({d.origin_topic for d in members if d.origin_topic is not None})),
        first=members[0].time,
        last=members[-1].time,
    )


def latest_per_id(dead_letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """The last dead letter of each ce_id (a record without one stands alone), oldest first."""
    latest: dict[object, DeadLetter] = {}
    for d in sorted(dead_letters, key=lambda d: d.time):
        identity = d.id if d.id is not None else (d.topic, d.partition, d.offset)
        latest.pop(identity, None)  # re-inserted last, so the result stays in time order
        latest[identity] = d
    return list(latest.values())


def select(
    dead_letters: Iterable[DeadLetter],
    *,
    reason: str | None = None,
    ids: Iterable[str] | None = None,
    stage: str | None = None,
) -> list[DeadLetter]:
    """The latest dead letter of each ce_id, if it matches every criterion given (none given: all).

    ``reason`` is a case-insensitive substring of the reason; ``stage`` must match exactly.
    An id that was replayed and dead-lettered again counts only with its latest reason and stage.
    """
    wanted = None if ids is None else set(ids)
    needle = None if reason is None else reason.casefold()
    return [
        d
        for d in latest_per_id(dead_letters)
        if (needle is None or needle in d.reason.casefold())
        and (wanted is None or d.id in wanted)
        and (stage is None or d.stage == stage)
    ]


@dataclass(frozen=True)
class Replayed:
    """What became of one selected dead letter: sent to ``topic``, or not, and why not."""

    dead_letter: DeadLetter
    topic: str | None
    refusal: str | None = None


def replay_headers(dead_letter: DeadLetter) -> Headers:
    """The original headers, without the dead-letter context, with the replay counted."""
    kept = [
        (name, value)
        for name, value in dead_letter.headers
        if not name.startswith(DEAD_LETTER_PREFIX) and name != REPLAYS_HEADER
    ]
    return [*kept, (REPLAYS_HEADER, str(dead_letter.replays + 1).encode())]


def destination(config: Config, dead_letter: DeadLetter) -> Replayed:
    """Where ``dead_letter`` would be replayed to, or why it must not be."""
    inputs = sources(config)
    topic = dead_letter.origin_topic or inputs.get(dead_letter.topic)
    if dead_letter.replays >= MAX_REPLAYS:
        why = f"replayed {dead_letter.replays} times already and failed each time (the limit is {MAX_REPLAYS})"
        return Replayed(dead_letter, None, why)
    if dead_letter.value is None:
        return Replayed(dead_letter, None, "it does not hold the original record (its value is missing)")
    if topic is None:
        return Replayed(dead_letter, None, f"no {ORIGIN_TOPIC_HEADER} header, and {dead_letter.topic} has no source")
    if topic not in inputs.values():
        return Replayed(dead_letter, None, f"its origin {topic!r} is not an input topic of the pipeline")
    return Replayed(dead_letter, topic)


def replay(config: Config, dead_letters: Sequence[DeadLetter], *, dry_run: bool = False) -> list[Replayed]:
    """Send each dead letter that may be replayed back to its origin topic; wait for every acknowledgement."""
    plan = [destination(config, dead_letter) for dead_letter in dead_letters]
    sendable = [entry for entry in plan if entry.refusal is None]
    if dry_run or not sendable:
        return plan
    errors = iter(_send(config, sendable))
    return [entry if entry.refusal is not None else _acknowledged(entry, next(errors)) for entry in plan]


def _acknowledged(entry: Replayed, error: str | None) -> Replayed:
    return entry if error is None else Replayed(entry.dead_letter, None, f"not acknowledged by Kafka: {error}")


def _send(config: Config, entries: list[Replayed]) -> list[str | None]:
    """Each entry's send error, or None once Kafka acknowledged it."""
    try:
        producer = kafka_clients.producer(config)
    except KafkaError as error:
        raise _kafka_failed(config, "replaying", error) from None
    try:
        futures = [_send_one(producer, entry) for entry in entries]
        producer.flush()
    except KafkaError as error:  # e.g. no metadata within max_block_ms: the broker went away
        raise RuntimeError(
            f"replaying: Kafka at {config.bootstrap_servers} failed ({error!r}); some records may have been sent: "
            "run it again once `iotpipe status` shows kafka healthy (an image sent twice is stored once)"
        ) from None
    finally:
        producer.close()
    return [None if future.succeeded() else repr(future.exception) for future in futures]


def _send_one(producer: KafkaProducer, entry: Replayed) -> FutureRecordMetadata:
    dead_letter = entry.dead_letter
    return producer.send(entry.topic, key=dead_letter.key, value=dead_letter.value, headers=replay_headers(dead_letter))
