"""Cameras hosted by one fleet: warmed up before the clock, jittered schedules, answers matched by key and id.

Kafka is faked here (a producer and a listener over one in-memory log, and a bridge that answers
every image through the wire format's own records); the real thing is tests/integration/test_loadtest.py.
"""

import random
import threading
import time
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from iotpipe.config import Config
from iotpipe.wire import ImageEvent, Prediction, WireError, max_image_bytes, now_iso
from producer import Camera, Fleet, Producer, fleet
from producer.schedule import JITTER, send_offsets

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60


@dataclass
class Record:
    key: bytes
    value: bytes
    headers: list


class FakeKafka:
    """One in-memory broker: what the fleet sends, in order, and the answers a fake bridge gives."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.log: list[str] = []
        self.sent: list[Record] = []
        self.answers: list[Record] = []
        self.lock = threading.Lock()

    def producer(self, config):
        return FakeProducer(self)

    def consumer(self, config, group_id=None):
        return FakeConsumer(self)

    def publish(self, key: bytes, value: bytes, headers: list) -> None:
        with self.lock:
            self.log.append("send")
            self.sent.append(Record(key, value, headers))
            if self.answer:
                self.answers.append(answer_to(Record(key, value, headers)))


def answer_to(record: Record) -> Record:
    """The bridge's result for an image record, written by the wire format."""
    image = ImageEvent.from_record(record.value, record.headers)
    now = now_iso()
    prediction = Prediction(
        id=image.id,
        producer_id=image.source,
        subject=image.subject,
        ground_truth=image.ground_truth,
        label="cat",
        scores={"cat": 0.9},
        model="cifar10-resnet",
        model_version="20.1",
        sent_at=image.time,
        received_at=now,
        inferred_at=now,
        content_type=image.content_type,
        image=image.data,
    )
    return Record(*prediction.to_record())


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    def partitions_for(self, topic: str) -> set[int]:
        self.kafka.log.append("metadata")
        return {0, 1, 2}

    def send(self, topic: str, key: bytes, value: bytes, headers: list) -> None:
        self.kafka.publish(key, value, headers)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeConsumer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def assign(self, partitions) -> None:
        self.kafka.log.append("assigned")

    def seek_to_end(self) -> None:
        pass

    def position(self, partition) -> int:
        self.kafka.log.append("positioned")
        return 0

    def poll(self, timeout_ms: int) -> dict:
        with self.kafka.lock:
            answers, self.kafka.answers = self.kafka.answers, []
        if not answers:
            time.sleep(0.005)
        return {"partition": answers} if answers else {}

    def close(self) -> None:
        pass


@pytest.fixture
def kafka(monkeypatch) -> FakeKafka:
    fake = FakeKafka()
    monkeypatch.setattr(fleet.kafka_clients, "producer", fake.producer)
    monkeypatch.setattr(fleet.kafka_clients, "consumer", fake.consumer)
    return fake


def images(count: int) -> list:
    from producer import SourceImage

    return [
        SourceImage(f"cat/{index}.jpg", "cat", "image/jpeg", encoded=JPEG + bytes([index])) for index in range(count)
    ]


def test_every_camera_of_a_fleet_gets_its_own_answers_and_its_first_image_timed(kafka) -> None:
    cameras = [Camera(f"camera-{n}", images(5), rate=200.0) for n in range(3)]
    reports = Fleet(Config(), cameras, timeout_s=5).run()
    assert [(r.producer_id, r.sent, r.answered, r.lost) for r in reports] == [
        (f"camera-{n}", 5, 5, 0) for n in range(3)
    ]
    assert all(report.first_latency == report.latencies[0] for report in reports)
    assert all(report.duration_s > 0 for report in reports)


def test_the_first_image_leaves_only_after_metadata_and_the_listener_are_ready(kafka) -> None:
    Fleet(Config(), [Camera("camera-1", images(3), rate=100.0)], timeout_s=5).run()
    first_send = kafka.log.index("send")
    assert {"metadata", "assigned", "positioned"} <= set(kafka.log[:first_send])


def test_results_of_other_cameras_and_unreadable_results_are_not_counted_as_answers(kafka) -> None:
    kafka.answer = False
    cameras = [Camera("camera-1", images(2), rate=0)]
    running = Fleet(Config(), cameras, timeout_s=1)
    running.prepare()
    sending = threading.Thread(target=lambda: setattr(sending, "reports", running.run()))
    sending.start()
    while len(kafka.sent) < 2:
        time.sleep(0.01)
    mine, other = kafka.sent
    stranger = answer_to(
        Record(b"camera-2", other.value, [(n, b"camera-2" if n == "ce_source" else v) for n, v in other.headers])
    )
    garbled = Record(mine.key, b"not a prediction", answer_to(mine).headers)
    with kafka.lock:
        kafka.answers += [stranger, garbled, answer_to(mine)]
    sending.join()
    [report] = sending.reports
    assert (report.sent, report.answered, report.lost) == (2, 1, 1)


def test_an_unanswered_image_is_lost_after_the_timeout(kafka) -> None:
    kafka.answer = False
    [report] = Fleet(Config(), [Camera("camera-1", images(1), rate=0)], timeout_s=0.2).run()
    assert (report.sent, report.answered, report.lost, report.first_latency) == (1, 0, 1, None)


def test_an_image_too_large_for_its_prediction_is_refused_unsent_counted_and_logged(kafka, caplog) -> None:
    config = Config(max_request_size=64 * 1024)
    limit = max_image_bytes(config.max_request_size)
    from producer import SourceImage

    small = SourceImage("cat/small.jpg", "cat", "image/jpeg", encoded=b"\xff" * limit)
    large = SourceImage("cat/large.jpg", "cat", "image/jpeg", encoded=b"\xff" * (limit + 1))
    refused_before = REGISTRY.get_sample_value("iotpipe_producer_images_total", {"outcome": "refused"})

    report = Producer(config, [small, large], producer_id="camera-1", count=2, rate=0, timeout_s=5).run()

    assert [record.value for record in kafka.sent] == [small.encoded]
    assert (report.sent, report.refused, report.lost) == (1, 1, 0)
    assert REGISTRY.get_sample_value("iotpipe_producer_images_total", {"outcome": "refused"}) == refused_before + 1
    assert f"cat/large.jpg not sent: image of {limit + 1} bytes is over the limit of {limit} bytes" in caplog.text


def test_a_producer_id_that_couchdb_would_refuse_is_refused_at_start() -> None:
    with pytest.raises(WireError, match="--producer-id '_camera' starts with '_'"):
        Producer(Config(), [], producer_id="_camera", count=0, rate=1)


@given(
    count=st.integers(min_value=1, max_value=300),
    rate=st.floats(min_value=0.01, max_value=10_000),
    seed=st.integers(),
)
def test_a_schedule_keeps_its_order_and_its_rate_with_each_send_within_its_jitter(count, rate, seed) -> None:
    offsets = send_offsets(count, rate, random.Random(seed))
    interval = 1 / rate
    assert offsets == sorted(offsets)
    assert offsets[0] >= 0
    for index, offset in enumerate(offsets):  # image i leaves i intervals after the first, give or take the jitter
        assert abs(offset - offsets[0] - index * interval) <= 2 * JITTER * interval * (1 + 1e-9)
    assert offsets[-1] < count * interval


@given(count=st.integers(min_value=0, max_value=100), seed=st.integers())
def test_an_unpaced_schedule_sends_everything_at_once(count, seed) -> None:
    assert send_offsets(count, 0, random.Random(seed)) == [0.0] * count


def test_cameras_at_the_same_rate_do_not_send_in_lock_step() -> None:
    starts = {send_offsets(3, 5.0, random.Random(f"camera-{n}"))[0] for n in range(10)}
    assert len(starts) == 10
