"""One processing loop for the bridge and the consumer: poll, decode, process, publish, commit.

The bridge and the consumer are two *handlers* over this loop (as Quix Streams runs every stream
through one ``Application`` loop). Its promises, each unit-tested with fakes in
tests/unit/test_processing.py:

- **Commit after acknowledgement.** A batch's offsets are committed only once every output and
  dead letter of it is acknowledged by Kafka (and the handler's own writes have returned), so a
  crash replays the batch; the idempotent writes downstream absorb the replay.
- **Every failure has a class.**
  * A record that breaks the wire format (``WireError`` from ``decode``) is dead-lettered at once.
  * An ``Outage`` (a dependency away: refused connection, no healthy server, broker away) is waited
    out with backoff, without end and visibly: a log line and a metric per wait, and the
    ``.waiting`` file beside the ready file that ``iotpipe status`` shows. Meanwhile the loop
    *pauses* its partitions and keeps polling, so the group keeps the member.
  * A failure that follows one record (the handler reports it, or Kafka refuses that record for
    good) dead-letters that record with the reason and the attempts; the rest of its batch goes on.
  * ``BatchFailed`` (a whole request failed and the culprit is unknown): once ``check`` has shown
    that the dependency answers known-good input (else it is an outage), the batch is tried
    ``attempts_before_split`` times, then split in halves until the failing record is alone; a
    record that still fails alone that many times is dead-lettered.
- Dead letters keep the original key, value and every header, plus the context headers of
  ``iotpipe.wire.dead_letter_headers`` (reason, attempts, stage, origin, time).
- **Warm before ready.** The ready file is written only once the handler has paid its first-use
  costs (``warm_up``: connections, a first inference), the producer knows the topics it publishes
  to, and the consumer has joined its group: the first image meets no cold start.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, KafkaTimeoutError
from prometheus_client import Counter, Gauge

from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.service import mark_ready
from iotpipe.wire import Headers, Origin, WireError, cut, dead_letter_headers, decode_headers, now_iso

log = logging.getLogger("iotpipe.processing")

T = TypeVar("T")

HEARTBEAT_S = 10.0

OUTAGE_WAITS = Counter(
    "iotpipe_outage_waits", "Outages waited out (one per wait), by service and dependency", ["service", "dependency"]
)
WAITING = Gauge(
    "iotpipe_waiting", "1 while the service waits out an outage of this dependency", ["service", "dependency"]
)
SPLITS = Counter("iotpipe_batch_splits", "Batches split to isolate a failing record", ["service"])
DEAD_LETTERS = Counter("iotpipe_dead_letters", "Records dead-lettered, by service and stage", ["service", "stage"])


def export_metrics(service: str, stage: str, dependencies: Sequence[str]) -> None:
    """Export the loop's metrics of ``service`` as 0 before the first event of each kind."""
    for dependency in (*dependencies, "Kafka"):
        OUTAGE_WAITS.labels(service, dependency)
        WAITING.labels(service, dependency)
    SPLITS.labels(service)
    for step in ("wire", stage, "publish"):
        DEAD_LETTERS.labels(service, f"{service}:{step}")


class Outage(Exception):
    """A dependency is away; the work waits for it and is never dropped."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail


class BatchFailed(Exception):
    """A request for the whole batch failed while its server works: some record in it is the cause."""


class Stopped(Exception):
    """The service was asked to stop while the batch was unfinished: nothing of it is committed."""


@dataclass(frozen=True)
class Item(Generic[T]):
    """A record and what ``decode`` made of it."""

    record: ConsumerRecord
    value: T


@dataclass(frozen=True)
class Failure:
    """A record that failed on its own: it goes to the dead-letter topic."""

    record: ConsumerRecord
    reason: str
    stage: str
    attempts: int = 1


@dataclass(frozen=True)
class Output:
    """A record to publish on behalf of ``source``; if Kafka refuses it for good, ``source`` is dead-lettered."""

    source: ConsumerRecord
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    failure: Failure | None = None  # set on a dead letter: why its source failed


@dataclass
class Processed:
    outputs: list[Output] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def __add__(self, other: Processed) -> Processed:
        return Processed(self.outputs + other.outputs, self.failures + other.failures)


class Handler(Protocol[T]):
    """What the bridge and the consumer each supply to the loop."""

    service: str  # in logs, metrics and the dead letters' stage
    stage: str  # what ``process`` does, in the dead letters' stage ("inference", "store")
    dead_letter_topic: str
    output_topics: tuple[str, ...]  # where ``process``'s outputs go, besides dead letters

    def decode(self, record: ConsumerRecord) -> T:
        """The record's content; raises WireError for a record that breaks the wire format."""

    def process(self, items: Sequence[Item[T]]) -> Processed:
        """The batch's outputs and per-record failures; raises Outage or BatchFailed."""

    def check(self) -> None:
        """Return if the dependency answers known-good input; raise Outage if it does not."""

    def warm_up(self) -> None:
        """``check``, and pay every cost that the first batch would otherwise pay; raise Outage as ``check``."""


class Service:
    """A process that runs one handler over the processing loop (the bridge, the consumer) until ``stopping``."""

    def __init__(self, config: Config, ready_file: Path | None = None) -> None:
        self.config = config
        self.ready_file = ready_file
        self.stopping = threading.Event()

    def serve(
        self, topic: str, group_id: str, handler: Handler[T], lag: Gauge, dead_lettered: Callable[[int], None]
    ) -> None:
        """Run ``handler`` over ``topic`` as consumer group ``group_id`` until ``stopping`` is set.

        Its Kafka clients are made once a broker answers, so an outage at start is waited out, and
        are closed at the end.
        """
        config, stopping = self.config, self.stopping
        consumer = kafka_clients.connected(
            lambda: kafka_clients.consumer(config, topic, group_id=group_id), config, stopping
        )
        producer = kafka_clients.connected(lambda: kafka_clients.producer(config), config, stopping)
        loop = ProcessingLoop(config, consumer, producer, handler, stopping, self.ready_file, lag, dead_lettered)
        try:
            loop.run()
        finally:
            producer.close()
            consumer.close()


def origin_of(record: ConsumerRecord) -> Origin:
    return Origin(record.topic, record.partition, record.offset)


class ProcessingLoop(Generic[T]):
    def __init__(
        self,
        config: Config,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        handler: Handler[T],
        stopping: threading.Event,
        ready_file: Path | None = None,
        lag: Gauge | None = None,
        dead_lettered: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.stopping = stopping
        self.ready_file = ready_file
        self.waiting_file = ready_file.with_suffix(".waiting") if ready_file else None
        self.lag = lag
        self.dead_lettered = dead_lettered
        self._last_beat = -HEARTBEAT_S
        self._joined = threading.Event()  # set once the consumer has joined its group
        self._warm = False  # the handler's warm-up and the producer's metadata are done

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Poll and handle batches until ``stopping`` is set; a clean stop commits what was handled."""
        for stale in (self.ready_file, self.waiting_file):  # left by a process before this one
            if stale is not None:
                stale.unlink(missing_ok=True)
        try:
            self.consumer.subscribe(topics=sorted(self.consumer.subscription()), listener=JoinListener(self._joined))
            self._wait_out(self.handler.warm_up)  # ready means able to work: the dependency answers, warm
            self._wait_out(self._fetch_metadata)
            self._warm = True
            while not self.stopping.is_set():
                records = self._poll()
                self._beat()
                if records:
                    self.handle(records)
                    self.consumer.commit_async(callback=_log_failed_commit)
                self._update_lag()
        except Stopped:
            return  # the unfinished batch is not committed: the next run replays it
        self.consumer.commit()

    def handle(self, records: Sequence[ConsumerRecord]) -> None:
        """Process one batch and publish all it produces; returns once Kafka acknowledged every record."""
        items: list[Item[T]] = []
        failures: list[Failure] = []
        for record in records:
            try:
                items.append(Item(record, self.handler.decode(record)))
            except WireError as error:
                failures.append(Failure(record, str(error), stage=f"{self.handler.service}:wire"))
            except Exception as error:  # a decoder bug must cost only the record that found it
                log.exception("decoding %s failed unexpectedly", origin_of(record))
                failures.append(Failure(record, f"unexpected {error!r}", stage=f"{self.handler.service}:wire"))
        processed = self._isolate(items, tried=0) if items else Processed()
        self._publish([*processed.outputs, *(self._dead_letter(f) for f in [*failures, *processed.failures])])

    def _fetch_metadata(self) -> None:
        """The partitions of every topic the loop publishes to, so that no first send waits for them."""
        for topic in sorted({*self.handler.output_topics, self.handler.dead_letter_topic}):
            try:
                self.producer.partitions_for(topic)
            except KafkaError as error:
                raise Outage("Kafka", f"no metadata for {topic} at {self.config.bootstrap_servers}: {error}") from None

    def _poll(self) -> list[ConsumerRecord]:
        batch = self._wait_out(lambda: self._poll_broker(timeout_ms=500))
        return [record for records in batch.values() for record in records]

    def _poll_broker(self, timeout_ms: int) -> dict:
        try:
            return self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as error:
            raise Outage("Kafka", f"poll failed at {self.config.bootstrap_servers}: {error}") from None

    # -- isolating the record that fails ----------------------------------------------------

    def _isolate(self, items: Sequence[Item[T]], tried: int) -> Processed:
        """Process ``items``; when the batch fails with no known culprit, retry, then split it.

        ``tried`` counts the attempts that the records already had as part of a larger batch.
        A first batch and a lone record get the whole attempt budget; a half gets one attempt,
        so that a culprit in 512 records is found in about ten quick requests.
        """
        budget = self.config.attempts_before_split if tried == 0 or len(items) == 1 else 1
        attempts = 0
        while True:
            try:
                return self._wait_out(lambda: self._process(items))
            except BatchFailed as error:
                attempts += 1
                log.warning(
                    "%s: a batch of %d failed (attempt %d): %s", self.handler.service, len(items), attempts, error
                )
                self._wait_out(self.handler.check)  # a failure only counts against records if the server works
                if attempts < budget:
                    self._idle(self._backoff(attempts))
                    continue
                if len(items) == 1:
                    reason = f"failed alone {attempts} times while the server answered known-good input: {error}"
                    return Processed(failures=[Failure(items[0].record, reason, self._stage(), tried + attempts)])
                SPLITS.labels(self.handler.service).inc()
                half = len(items) // 2
                return self._isolate(items[:half], tried + attempts) + self._isolate(items[half:], tried + attempts)

    def _process(self, items: Sequence[Item[T]]) -> Processed:
        try:
            return self.handler.process(items)
        except (Outage, BatchFailed, Stopped):
            raise
        except Exception as error:  # unforeseen: isolate the record that causes it rather than halt
            log.exception("%s: processing a batch of %d failed unexpectedly", self.handler.service, len(items))
            raise BatchFailed(f"unexpected {error!r}") from error

    def _stage(self) -> str:
        return f"{self.handler.service}:{self.handler.stage}"

    # -- publishing -----------------------------------------------------------------------

    def _publish(self, outputs: list[Output]) -> None:
        """Send every output; retriable refusals are an outage, others dead-letter the output's source."""
        pending = outputs
        while pending:
            refused = self._wait_out(functools.partial(self._send_until_settled, pending))
            pending = [replacement for output, error in refused if (replacement := self._refused(output, error))]

    def _send_until_settled(self, outputs: list[Output]) -> list[tuple[Output, KafkaError]]:
        """Send; return the outputs Kafka refused for good. Raises Outage while some are only unacknowledged."""
        failed = self._send(outputs)
        retriable = [(output, error) for output, error in failed if getattr(error, "retriable", False)]
        if retriable:
            outputs[:] = [output for output, _ in retriable]  # acknowledged ones are not sent again
            raise Outage("Kafka", f"{len(retriable)} records not acknowledged: {retriable[0][1]}")
        return failed

    def _send(self, outputs: Sequence[Output]) -> list[tuple[Output, KafkaError]]:
        futures = []
        failed: list[tuple[Output, KafkaError]] = []
        for output in outputs:
            try:
                future = self.producer.send(output.topic, key=output.key, value=output.value, headers=output.headers)
            except KafkaError as error:  # too large to send at all, or no metadata while the broker is away
                failed.append((output, error))
            else:
                futures.append((output, future))
        try:
            self.producer.flush()
        except KafkaError as error:
            log.warning("flush failed: %s", error)
        for output, future in futures:
            if not future.is_done:
                failed.append((output, KafkaTimeoutError("not acknowledged")))
            elif future.failed():
                failed.append((output, future.exception))
        return failed

    def _refused(self, output: Output, error: KafkaError) -> Output | None:
        """What to publish instead of an output that Kafka refused for good (e.g. too large)."""
        reason = f"Kafka refused the record for {output.topic}: {error}"
        if output.failure is None:
            return self._dead_letter(Failure(output.source, reason, f"{self.handler.service}:publish"))
        if output.value is None:
            log.error("dead letter of %s dropped: %s", origin_of(output.source), reason)
            return None
        # A dead letter too large for Kafka: keep the context and the CloudEvents id, not the record.
        failure, source = output.failure, output.source
        kept = [(name, value) for name, value in source.headers or [] if name == "ce_id"]
        note = f"{failure.reason}; {reason}, so the original record ({len(source.value or b'')} bytes) was not kept"
        headers = dead_letter_headers(
            kept, note, stage=failure.stage, attempts=failure.attempts, origin=origin_of(source)
        )
        return Output(source, output.topic, source.key, None, headers, failure)

    def _dead_letter(self, failure: Failure) -> Output:
        record = failure.record
        ce_id = decode_headers_safely(record.headers).get("ce_id", "?")
        log.warning(
            "dead letter %s (%s, %s): %s", cut(ce_id, 80), failure.stage, origin_of(record), cut(failure.reason)
        )
        DEAD_LETTERS.labels(self.handler.service, failure.stage).inc()
        self.dead_lettered(1)
        headers = dead_letter_headers(
            record.headers, failure.reason, stage=failure.stage, attempts=failure.attempts, origin=origin_of(record)
        )
        return Output(record, self.handler.dead_letter_topic, record.key, record.value, headers, failure)

    # -- waiting out outages --------------------------------------------------------------

    def _wait_out(self, call: Callable[[], T]) -> T:
        """``call()``, retried with backoff for as long as it raises Outage (partitions paused meanwhile)."""
        waits = 0
        try:
            while True:
                try:
                    return call()
                except Outage as outage:
                    if waits == 0:
                        self._begin_wait(outage)
                    waits += 1
                    log.warning("%s: waiting for %s (try %d)", self.handler.service, outage, waits)
                    self._idle(self._backoff(waits))
        finally:
            if waits:
                self._end_wait()

    def _backoff(self, attempt: int) -> float:
        return min(self.config.retry_backoff_initial_s * 2 ** (attempt - 1), self.config.retry_backoff_max_s)

    def _begin_wait(self, outage: Outage) -> None:
        self._outage = outage
        OUTAGE_WAITS.labels(self.handler.service, outage.dependency).inc()
        WAITING.labels(self.handler.service, outage.dependency).set(1)
        if self.waiting_file is not None:
            self.waiting_file.parent.mkdir(parents=True, exist_ok=True)
            line = f"waiting for {outage.dependency} since {now_iso()}: {cut(outage.detail, 300)}"
            self.waiting_file.write_text(line.replace("\n", " ") + "\n")

    def _end_wait(self) -> None:
        WAITING.labels(self.handler.service, self._outage.dependency).set(0)
        log.info("%s: %s is back", self.handler.service, self._outage.dependency)
        if self.waiting_file is not None:
            self.waiting_file.unlink(missing_ok=True)

    def _idle(self, seconds: float) -> None:
        """Wait ``seconds`` with every partition paused, polling so that the group keeps this member."""
        deadline = time.monotonic() + seconds
        try:
            while (remaining := deadline - time.monotonic()) > 0 and not self.stopping.is_set():
                self._pause_assigned()
                try:
                    stray = self.consumer.poll(timeout_ms=max(1, int(min(remaining, 0.5) * 1000)))
                except KafkaError:
                    self.stopping.wait(min(remaining, 0.5))
                    continue
                self._rewind(stray)
                self._beat()
        finally:
            self.consumer.resume(*self.consumer.paused())
        if self.stopping.is_set():
            raise Stopped

    def _pause_assigned(self) -> None:
        unpaused = set(self.consumer.assignment()) - set(self.consumer.paused())
        if unpaused:
            self.consumer.pause(*unpaused)

    def _rewind(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Records of a partition assigned during the wait (not yet paused) are read again later."""
        for partition, records in batch.items():
            if records:
                self.consumer.seek(partition, records[0].offset)
                self.consumer.pause(partition)

    # -- readiness and lag ----------------------------------------------------------------

    def _beat(self) -> None:
        """Write the ready file once warm and joined, then every HEARTBEAT_S: a liveness probe reads its age."""
        if not (self._warm and self._joined.is_set()):  # the outage waits of the warm-up poll too
            return
        if self.ready_file is not None and time.monotonic() - self._last_beat >= HEARTBEAT_S:
            mark_ready(self.ready_file)
            self._last_beat = time.monotonic()

    def _update_lag(self) -> None:
        if self.lag is None:
            return
        with contextlib.suppress(KafkaError):  # unknown during a broker outage; the gauge keeps its last value
            self.lag.set(records_behind(self.consumer))


class JoinListener(ConsumerRebalanceListener):
    """Sets ``joined`` at the first assignment, which comes after every join, even one with no partitions."""

    def __init__(self, joined: threading.Event) -> None:
        self.joined = joined

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        self.joined.set()


def decode_headers_safely(headers: Headers | None) -> dict[str, str]:
    try:
        return decode_headers(headers)
    except WireError:
        return {}


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
