"""Many simulated cameras in one process: one Kafka producer and one listener shared by all of them.

Each camera has its own id, rate, jittered open-loop schedule (producer/schedule.py) and latency
file; what one process costs does not grow with its cameras. ``prepare`` pays every one-time cost
before any camera's clock starts: images read and checked, the producer connected with the images
topic's metadata, the listener assigned to the cameras' partitions of ``iot-predictions`` and
positioned at their ends. ``run`` then sends on schedule, whatever the answers do, so a slow
pipeline shows up as latency. Results are matched to a camera by record key and the prediction's
id (read by ``iotpipe.wire``); an image not answered ``timeout_s`` after the last send is lost.
An image the bridge would refuse is refused here instead, before the clock starts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka import TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from iotpipe import kafka_clients, latency_file
from iotpipe.config import Config
from iotpipe.wire import ImageEvent, Prediction, WireError, check_id, max_image_bytes
from producer.images import SourceImage
from producer.schedule import send_offsets

log = logging.getLogger("iotpipe.producer")

CONNECT_TIMEOUT_S = 60.0

IMAGES = Counter(
    "iotpipe_producer_images", "Images this camera sent, those answered, and those refused unsent", ["outcome"]
)
for outcome in ("sent", "answered", "refused"):
    IMAGES.labels(outcome)  # exported as 0 before the first one
ROUND_TRIP_SECONDS = Histogram(
    "iotpipe_producer_round_trip_seconds",
    "From sending an image to receiving its label",
    buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
)


@dataclass(frozen=True)
class Camera:
    """What one camera sends, in order, at ``rate`` images/s (0: as fast as it can)."""

    producer_id: str
    images: Sequence[SourceImage]
    rate: float
    latency_file: Path | None = None

    def __post_init__(self) -> None:
        check_id(self.producer_id, "--producer-id")


@dataclass
class ProducerReport:
    producer_id: str
    sent: int = 0
    answered: int = 0
    latencies: list[float] = field(default_factory=list)  # of the answered images, in the order they were sent
    duration_s: float = 0.0
    refused: int = 0  # never sent: the wire format would refuse them (logged with the reason)
    first_latency: float | None = None  # of the camera's first image; None when it was not answered

    @property
    def lost(self) -> int:
        return self.sent - self.answered


@dataclass
class _Tally:
    """One camera's images ready to send, and when each left and came back (perf_counter seconds)."""

    camera: Camera
    ready: list[tuple[SourceImage, bytes]]
    refused: int
    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)


class Fleet:
    def __init__(
        self,
        config: Config,
        cameras: Sequence[Camera],
        timeout_s: float = 30.0,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.progress = progress
        self._tallies = [self._ready(camera) for camera in cameras]
        self._by_key = {tally.camera.producer_id.encode(): tally for tally in self._tallies}
        self._sends = self._schedule()
        self._producer = None
        self._answered = threading.Condition()
        self._listening = threading.Event()
        self._stop_listening = threading.Event()
        self._listener: threading.Thread | None = None
        self._listen_error: Exception | None = None
        self._wall_offset = time.time() - time.perf_counter()

    def prepare(self) -> None:
        """Connect and position everything, so that a camera's first image is timed like its tenth."""
        if self._producer is not None:
            return
        self._listener = threading.Thread(target=self._listen, name="fleet-listener", daemon=True)
        self._listener.start()
        self._producer = kafka_clients.producer(self.config)
        self._producer.partitions_for(self.config.images_topic)  # metadata now, not on the first send
        if not self._listening.wait(CONNECT_TIMEOUT_S) or self._listen_error is not None:
            self.close()
            raise RuntimeError(
                f"could not read {self.config.predictions_topic} at {self.config.bootstrap_servers}: "
                f"{self._listen_error or f'no answer in {CONNECT_TIMEOUT_S:g} s'}; is the stack up (`iotpipe status`)?"
            )

    def run(self) -> list[ProducerReport]:
        """Send every camera's images on its schedule and wait for the answers; one report per camera."""
        self.prepare()
        try:
            self._send_all(time.perf_counter())
            self._wait_for_answers(time.perf_counter() + self.timeout_s)
            duration_s = self._duration(waited=time.perf_counter())
        finally:
            self.close()
        for tally in self._tallies:
            if tally.camera.latency_file is not None:
                self._write_latency_file(tally)
        return [_report(tally, duration_s) for tally in self._tallies]

    def _duration(self, waited: float) -> float:
        """From the first send to the last answer, or to the end of the wait when an image was lost."""
        sent = [t for tally in self._tallies for t in tally.sent.values()]
        received = [t for tally in self._tallies for t in tally.received.values()]
        end = max(received) if received and len(received) == len(sent) else waited
        return end - min(sent, default=end)

    def close(self) -> None:
        self._stop_listening.set()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()
        if self._listener is not None:
            self._listener.join(timeout=10)

    def _ready(self, camera: Camera) -> _Tally:
        """The camera's images read and checked once; the bridge would dead-letter the refused ones."""
        limit = max_image_bytes(self.config.max_request_size)
        checked: dict[SourceImage, bytes | None] = {}
        for image in camera.images:
            if image not in checked:
                checked[image] = _checked(camera.producer_id, image, limit)
        ready = [(image, checked[image]) for image in camera.images if checked[image] is not None]
        refused = len(camera.images) - len(ready)
        IMAGES.labels("refused").inc(refused)
        return _Tally(camera, ready, refused)

    def _schedule(self) -> list[tuple[float, _Tally, SourceImage, bytes]]:
        """Every camera's sends merged in time order; each camera's jitter is seeded by its id."""
        sends = [
            (offset, tally, image, data)
            for tally in self._tallies
            for offset, (image, data) in zip(
                send_offsets(len(tally.ready), tally.camera.rate, random.Random(tally.camera.producer_id)),
                tally.ready,
                strict=True,
            )
        ]
        return sorted(sends, key=lambda send: send[0])

    def _send_all(self, started: float) -> None:
        for offset, tally, image, data in self._sends:
            delay = started + offset - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self._send(tally, image, data)
            if self.progress:
                self.progress(1)
        self._producer.flush()

    def _send(self, tally: _Tally, image: SourceImage, data: bytes) -> None:
        event = ImageEvent(
            source=tally.camera.producer_id,
            data=data,
            content_type=image.content_type,
            subject=image.name,
            ground_truth=image.label,
            **({"id": image.event_id} if image.event_id else {}),
        )
        key, value, headers = event.to_record()
        tally.sent[event.id] = time.perf_counter()
        IMAGES.labels("sent").inc()
        self._producer.send(self.config.images_topic, key=key, value=value, headers=headers)

    def _listen(self) -> None:
        try:
            self._listen_for_answers()
        except Exception as error:  # reported by prepare(), which is waiting for the listener
            self._listen_error = error
            self._listening.set()

    def _listen_for_answers(self) -> None:
        consumer = kafka_clients.consumer(self.config, group_id=None)
        try:
            topic = self.config.predictions_topic
            partitions = list(consumer.partitions_for_topic(topic) or ())
            if not partitions:
                raise RuntimeError(f"topic {topic} does not exist; is the stack up?")
            # Results are keyed by producer id: each camera's land in one partition.
            wanted = {TopicPartition(topic, kafka_clients.partition_of(key, partitions)) for key in self._by_key}
            consumer.assign(sorted(wanted))
            consumer.seek_to_end()
            for partition in wanted:
                consumer.position(partition)  # resolve "end" now, before the first image is sent
            self._listening.set()
            while not self._stop_listening.is_set():
                try:
                    batch = consumer.poll(timeout_ms=200)
                except KafkaError as error:  # the broker is away: keep listening, answers will come
                    log.warning("%s; listening again in 0.5 s", error)
                    self._stop_listening.wait(0.5)
                    continue
                self._record_answers([record for records in batch.values() for record in records])
        finally:
            consumer.close()

    def _record_answers(self, records: list) -> None:
        now = time.perf_counter()
        with self._answered:
            for record in records:
                tally = self._by_key.get(record.key)
                if tally is None:
                    continue
                image_id = _answered_id(record)
                if image_id in tally.sent and image_id not in tally.received:
                    tally.received[image_id] = now
                    IMAGES.labels("answered").inc()
                    ROUND_TRIP_SECONDS.observe(now - tally.sent[image_id])
            self._answered.notify_all()

    def _wait_for_answers(self, deadline: float) -> None:
        with self._answered:
            while any(len(t.received) < len(t.sent) for t in self._tallies) and time.perf_counter() < deadline:
                self._answered.wait(timeout=0.2)

    def _write_latency_file(self, tally: _Tally) -> None:
        images = [
            latency_file.SentImage(image_id, sent + self._wall_offset, _latency(sent, tally.received.get(image_id)))
            for image_id, sent in tally.sent.items()
        ]
        latency_file.write(tally.camera.latency_file, images)


def _checked(producer_id: str, image: SourceImage, limit: int) -> bytes | None:
    """The image's bytes, or None (logged with the reason) when the bridge would refuse it."""
    data = image.read()
    event = ImageEvent(producer_id, data, image.content_type, subject=image.name, ground_truth=image.label)
    try:
        ImageEvent.from_record(*event.to_record()[1:], max_bytes=limit)
    except WireError as error:
        log.warning("%s: %s not sent: %s", producer_id, image.name, error)
        return None
    return data


def _latency(sent: float, received: float | None) -> float | None:
    return None if received is None else received - sent


def _answered_id(record) -> str | None:
    """The image id of a result; a result this camera cannot read is not its own."""
    try:
        return Prediction.from_record(record.value, record.headers).id
    except WireError:
        return None


def _report(tally: _Tally, duration_s: float) -> ProducerReport:
    latencies = [tally.received[i] - sent for i, sent in tally.sent.items() if i in tally.received]
    first = next(iter(tally.sent), None)
    first_latency = tally.received[first] - tally.sent[first] if first in tally.received else None
    return ProducerReport(
        tally.camera.producer_id,
        len(tally.sent),
        len(latencies),
        latencies,
        duration_s,
        refused=tally.refused,
        first_latency=first_latency,
    )
