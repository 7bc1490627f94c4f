"""The processing loop's promises, with a fake Kafka and a fake handler (no broker, no model server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from iotpipe.config import Config
from iotpipe.processing import SPLITS, BatchFailed, Item, Outage, Output, Processed, ProcessingLoop
from iotpipe.wire import (
    ATTEMPTS_HEADER,
    ORIGIN_OFFSET_HEADER,
    ORIGIN_TOPIC_HEADER,
    REASON_HEADER,
    STAGE_HEADER,
    WireError,
    decode_headers,
)

TOPIC = "in"
OUT = "out"
DLQ = "in-dlq"
CONFIG = Config(retry_backoff_initial_s=0.001, retry_backoff_max_s=0.004, attempts_before_split=3)


def record(offset: int, value: bytes, partition: int = 0) -> ConsumerRecord:
    headers = [("ce_id", f"id-{offset}".encode()), ("camera-extra", b"kept")]
    return ConsumerRecord(
        topic=TOPIC, partition=partition, leader_epoch=-1, offset=offset, timestamp=0, timestamp_type=0, key=b"key",
        value=value, headers=headers, checksum=None, serialized_key_size=3, serialized_value_size=len(value),
        serialized_header_size=0,
    )  # fmt: skip


class FakeConsumer:
    """A consumer of one topic whose partitions hold given records; records what the loop asks of it."""

    def __init__(self, partitions: dict[int, list[bytes]], max_poll: int = 100) -> None:
        self.log = {
            TopicPartition(TOPIC, p): [record(o, v, p) for o, v in enumerate(vs)] for p, vs in partitions.items()
        }
        self.positions = dict.fromkeys(self.log, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.paused_partitions: set[TopicPartition] = set()
        self.polls_while_paused = 0
        self.max_poll = max_poll
        self.on_poll: Callable[[], None] = lambda: None
        self.polls_before_join = 0  # polls that return nothing while the group forms
        self.listener = None

    def subscription(self) -> set[str]:
        return {TOPIC}

    def subscribe(self, topics=(), listener=None) -> None:
        assert list(topics) == [TOPIC]
        self.listener = listener

    def poll(self, timeout_ms: int = 0) -> dict:
        self.on_poll()
        if self.polls_before_join:
            self.polls_before_join -= 1
            return {}
        if self.listener is not None:  # the join completes in this poll, as kafka-python's does
            self.listener.on_partitions_assigned(self.assignment())
            self.listener = None
        if self.paused_partitions:
            self.polls_while_paused += 1
        batch = {}
        for partition, records in self.log.items():
            if partition in self.paused_partitions:
                continue
            taken = records[self.positions[partition] : self.positions[partition] + self.max_poll]
            if taken:
                batch[partition] = taken
                self.positions[partition] += len(taken)
        return batch

    def assignment(self) -> set[TopicPartition]:
        return set(self.log)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_partitions)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_partitions |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_partitions -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    def commit_async(self, callback=None) -> None:
        self.committed = dict(self.positions)

    def commit(self) -> None:
        self.committed = dict(self.positions)

    def highwater(self, partition: TopicPartition) -> int:
        return len(self.log[partition])

    def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]


@dataclass
class FakeFuture:
    exception: Exception | None = None
    is_done: bool = True

    def failed(self) -> bool:
        return self.exception is not None


@dataclass
class FakeProducer:
    """Acknowledges what ``refuse`` lets through; ``refuse(topic, value)`` returns an error or None."""

    refuse: Callable[[str, bytes | None], Exception | None] = lambda topic, value: None
    synchronous: bool = False  # refuse in send() itself, as kafka-python does past max_request_size
    acknowledged: list[tuple[str, bytes | None, list]] = field(default_factory=list)
    metadata_outages_left: int = 0
    known_topics: set[str] = field(default_factory=set)

    def partitions_for(self, topic: str) -> set[int]:
        if self.metadata_outages_left:
            self.metadata_outages_left -= 1
            raise KafkaTimeoutError("no metadata: broker away")
        self.known_topics.add(topic)
        return {0}

    def send(self, topic, key=None, value=None, headers=None) -> FakeFuture:
        error = self.refuse(topic, value)
        if error is not None and self.synchronous:
            raise error
        if error is None:
            self.acknowledged.append((topic, value, headers))
        return FakeFuture(error)

    def flush(self) -> None:
        pass

    def on(self, topic: str) -> list[tuple[bytes | None, dict[str, str]]]:
        return [(value, decode_headers(headers)) for t, value, headers in self.acknowledged if t == topic]


class FakeHandler:
    """Values b"bad..." break the wire format; a batch holding b"poison..." fails as a whole."""

    service = "fake"
    stage = "work"
    dead_letter_topic = DLQ
    output_topics = (OUT,)

    def __init__(self) -> None:
        self.outages_left = 0  # the next calls of process raise Outage
        self.crashes_left = 0  # the next calls of process fail as a whole, and the server is down a while
        self.check_outages_left = 0
        self.batches: list[list[bytes]] = []
        self.checks = 0
        self.warm_ups = 0

    def decode(self, record: ConsumerRecord) -> bytes:
        if record.value.startswith(b"bad"):
            raise WireError("not our format")
        if record.value.startswith(b"crash"):
            raise KeyError("a decoder bug")
        return record.value

    def process(self, items: Sequence[Item[bytes]]) -> Processed:
        self.batches.append([item.value for item in items])
        if self.outages_left:
            self.outages_left -= 1
            raise Outage("the server", "connection refused")
        if self.crashes_left:
            self.crashes_left -= 1
            self.check_outages_left = 5
            raise BatchFailed("503 while the server restarts")
        if any(item.value.startswith(b"poison") for item in items):
            raise BatchFailed("500 for the whole request")
        return Processed(outputs=[Output(item.record, OUT, b"key", item.value.upper(), []) for item in items])

    def check(self) -> None:
        self.checks += 1
        if self.check_outages_left:
            self.check_outages_left -= 1
            raise Outage("the server", "unhealthy")

    def warm_up(self) -> None:
        self.check()
        self.warm_ups += 1


def run_until_drained(consumer: FakeConsumer, producer: FakeProducer, handler: FakeHandler, **kwargs) -> ProcessingLoop:
    stopping = threading.Event()
    loop = ProcessingLoop(CONFIG, consumer, producer, handler, stopping, **kwargs)
    previous = consumer.on_poll

    def stop_when_drained() -> None:
        previous()
        if not consumer.paused_partitions and all(consumer.positions[p] == len(r) for p, r in consumer.log.items()):
            stopping.set()

    consumer.on_poll = stop_when_drained
    loop.run()
    return loop


def test_every_good_record_is_published_and_the_batch_committed_after_acknowledgement() -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a", b"b"], 1: [b"c"]}), FakeProducer(), FakeHandler()
    run_until_drained(consumer, producer, handler)
    assert sorted(value for value, _ in producer.on(OUT)) == [b"A", b"B", b"C"]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2, TopicPartition(TOPIC, 1): 1}


def test_unacknowledged_output_is_sent_again_and_nothing_is_committed_meanwhile() -> None:
    unacknowledged = {"left": 2}

    def flaky(topic: str, value: bytes | None) -> Exception | None:
        if value == b"B" and unacknowledged["left"]:
            assert consumer.committed == {}, "committed before every output was acknowledged"
            unacknowledged["left"] -= 1
            return KafkaTimeoutError("broker away")
        return None

    consumer, handler = FakeConsumer({0: [b"a", b"b", b"c"]}), FakeHandler()
    producer = FakeProducer(refuse=flaky)
    run_until_drained(consumer, producer, handler)
    assert [value for value, _ in producer.on(OUT)] == [b"A", b"C", b"B"]  # A and C were not sent twice
    assert consumer.committed == {TopicPartition(TOPIC, 0): 3}


def test_a_stop_during_an_outage_commits_nothing_so_the_batch_is_replayed() -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a", b"b"]}), FakeProducer(), FakeHandler()
    handler.outages_left = 10**6
    stopping = threading.Event()
    consumer.on_poll = lambda: stopping.set() if consumer.paused_partitions else None
    ProcessingLoop(CONFIG, consumer, producer, handler, stopping).run()
    assert consumer.committed == {}
    assert producer.acknowledged == []


def test_a_record_that_breaks_the_wire_format_is_dead_lettered_whole_with_its_context() -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a", b"bad", b"c"]}), FakeProducer(), FakeHandler()
    run_until_drained(consumer, producer, handler)
    assert [value for value, _ in producer.on(OUT)] == [b"A", b"C"]
    [(value, headers)] = producer.on(DLQ)
    assert value == b"bad"
    assert headers["ce_id"] == "id-1" and headers["camera-extra"] == "kept"  # every original header
    assert headers[REASON_HEADER] == "not our format"
    assert headers[STAGE_HEADER] == "fake:wire"
    assert (headers[ORIGIN_TOPIC_HEADER], headers[ORIGIN_OFFSET_HEADER], headers[ATTEMPTS_HEADER]) == (TOPIC, "1", "1")


def test_a_decoder_bug_costs_only_the_record_that_found_it() -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a", b"crash", b"c"]}), FakeProducer(), FakeHandler()
    run_until_drained(consumer, producer, handler)
    assert [value for value, _ in producer.on(OUT)] == [b"A", b"C"]
    [(_, headers)] = producer.on(DLQ)
    assert "KeyError" in headers[REASON_HEADER]


@pytest.mark.parametrize("poison_at", [[0], [7], [19], [3, 4], [0, 10, 19]])
def test_a_failing_record_is_isolated_by_splitting_and_the_rest_of_its_batch_goes_on(poison_at: list[int]) -> None:
    values = [b"poison-%d" % i if i in poison_at else b"good-%d" % i for i in range(20)]
    consumer, producer, handler = FakeConsumer({0: values}), FakeProducer(), FakeHandler()
    splits = SPLITS.labels("fake")._value.get()
    run_until_drained(consumer, producer, handler)
    assert sorted(value for value, _ in producer.on(OUT)) == sorted(v.upper() for v in values if v.startswith(b"good"))
    dead = producer.on(DLQ)
    assert sorted(value for value, _ in dead) == sorted(v for v in values if v.startswith(b"poison"))
    for _, headers in dead:
        assert headers[STAGE_HEADER] == "fake:work"
        assert "500 for the whole request" in headers[REASON_HEADER]
        assert int(headers[ATTEMPTS_HEADER]) >= CONFIG.attempts_before_split  # it failed alone that often
    assert SPLITS.labels("fake")._value.get() > splits
    assert handler.checks >= len(poison_at)  # each failure was weighed against a working server
    assert consumer.committed == {TopicPartition(TOPIC, 0): 20}


def test_a_batch_that_fails_while_the_server_is_down_is_waited_for_and_loses_nothing() -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a", b"b", b"c"]}), FakeProducer(), FakeHandler()
    handler.crashes_left = CONFIG.attempts_before_split + 1  # more crashes than a batch's attempt budget
    run_until_drained(consumer, producer, handler)
    assert [value for value, _ in producer.on(OUT)] == [b"A", b"B", b"C"]
    assert producer.on(DLQ) == []  # a failure while the server was down counted against no record...
    assert handler.checks == 1 + (5 + 1) * (CONFIG.attempts_before_split + 1)  # ...the server was checked each time


def test_an_outage_pauses_every_partition_keeps_polling_and_resumes_after(tmp_path: Path) -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a"], 1: [b"b"]}), FakeProducer(), FakeHandler()
    handler.outages_left = 4
    seen_waiting: list[str] = []

    def look() -> None:
        if consumer.paused_partitions and waiting_file.exists():
            seen_waiting.append(waiting_file.read_text())

    consumer.on_poll = look
    ready = tmp_path / "fake.ready"
    waiting_file = ready.with_suffix(".waiting")
    run_until_drained(consumer, producer, handler, ready_file=ready)
    assert ready.exists()
    assert not waiting_file.exists()
    assert consumer.polls_while_paused >= 4  # the member kept polling, so the group keeps it
    assert consumer.paused_partitions == set()
    assert seen_waiting and seen_waiting[0].startswith("waiting for the server since ")
    assert sorted(value for value, _ in producer.on(OUT)) == [b"A", b"B"]
    assert producer.on(DLQ) == []


def test_records_of_a_partition_assigned_during_a_wait_are_read_again_later() -> None:
    consumer, producer, handler = FakeConsumer({0: [b"a"], 1: [b"b", b"d"]}, max_poll=1), FakeProducer(), FakeHandler()
    handler.outages_left = 3
    unpause_once = {"done": False}

    def reassign() -> None:  # a rebalance hands over partition 1 unpaused while the loop waits
        if consumer.paused_partitions and not unpause_once["done"]:
            unpause_once["done"] = True
            consumer.paused_partitions.discard(TopicPartition(TOPIC, 1))

    consumer.on_poll = reassign
    run_until_drained(consumer, producer, handler)
    assert unpause_once["done"]
    assert sorted(value for value, _ in producer.on(OUT)) == [b"A", b"B", b"D"]


@pytest.mark.parametrize("synchronous", [True, False], ids=["refused-by-the-client", "refused-by-the-broker"])
def test_an_output_that_kafka_refuses_for_good_dead_letters_its_source_record(synchronous: bool) -> None:
    def too_large(topic: str, value: bytes | None) -> Exception | None:
        return MessageSizeTooLargeError("too large") if topic == OUT and value == b"HUGE" else None

    consumer, handler = FakeConsumer({0: [b"a", b"huge", b"c"]}), FakeHandler()
    producer = FakeProducer(refuse=too_large, synchronous=synchronous)
    run_until_drained(consumer, producer, handler)
    assert [value for value, _ in producer.on(OUT)] == [b"A", b"C"]
    [(value, headers)] = producer.on(DLQ)
    assert value == b"huge"
    assert headers[STAGE_HEADER] == "fake:publish"
    assert "too large" in headers[REASON_HEADER]


def test_a_dead_letter_too_large_for_kafka_keeps_its_context_without_the_record() -> None:
    def refuse_large(topic: str, value: bytes | None) -> Exception | None:
        return MessageSizeTooLargeError("too large") if value and value.startswith(b"bad-huge") else None

    consumer, handler = FakeConsumer({0: [b"bad-huge", b"a"]}), FakeHandler()
    producer = FakeProducer(refuse=refuse_large)
    run_until_drained(consumer, producer, handler)
    [(value, headers)] = producer.on(DLQ)
    assert value is None
    assert headers["ce_id"] == "id-0"
    assert "not our format" in headers[REASON_HEADER] and "was not kept" in headers[REASON_HEADER]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2}


def test_files_left_by_an_earlier_process_do_not_make_this_one_look_ready_or_waiting(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.write_text("written by the process before this one")
    ready.with_suffix(".waiting").write_text("waiting for the server since long ago")
    consumer, producer, handler = FakeConsumer({0: [b"a"]}), FakeProducer(), FakeHandler()
    seen_at_first_check: list[bool] = []
    check = handler.check

    def look_then_check() -> None:
        seen_at_first_check.append(ready.exists() or ready.with_suffix(".waiting").exists())
        check()

    handler.check = look_then_check
    run_until_drained(consumer, producer, handler, ready_file=ready)
    assert seen_at_first_check[0] is False
    assert ready.read_text() != "written by the process before this one"


def test_ready_only_once_warm_the_output_topics_known_and_the_group_joined(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    consumer, producer, handler = FakeConsumer({0: [b"a"]}), FakeProducer(metadata_outages_left=2), FakeHandler()
    consumer.polls_before_join, handler.check_outages_left = 3, 2  # the server, then Kafka, then the group
    seen: list[tuple[bool, int, set[str], bool]] = []

    def look() -> None:
        seen.append((ready.exists(), handler.warm_ups, set(producer.known_topics), consumer.listener is None))

    consumer.on_poll = look
    run_until_drained(consumer, producer, handler, ready_file=ready)
    assert ready.exists()
    first_ready = next(index for index, (is_ready, *_) in enumerate(seen) if is_ready)
    assert seen[first_ready][1:] == (1, {OUT, DLQ}, True), "ready before warm, before metadata or before the join"
    assert first_ready >= 3  # the polls while the group formed did not make it ready
