"""One simulated camera: sends ``count`` images at ``rate`` per second and times each answer.

Sending is open loop (image i leaves at start + i / rate, whatever the answers do), so a slow
pipeline shows up as latency instead of silently lowering the offered load. A listener reads
``iot-predictions`` from its end (no consumer group, every partition) and matches results to
this camera by record key and CloudEvents id. An image not answered ``timeout_s`` after it was
sent is counted as lost. An image that the bridge would refuse (too large to come back inside
its prediction, or a name the wire format refuses) is refused here instead, before it is sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka import TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from iotpipe import kafka
from iotpipe.config import Config
from iotpipe.wire import Headers, ImageEvent, WireError, check_id, max_image_bytes
from producer.images import SourceImage, take

log = logging.getLogger("iotpipe.producer")

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


@dataclass
class ProducerReport:
    producer_id: str
    sent: int = 0
    answered: int = 0
    latencies: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    refused: int = 0  # never sent: the wire format would refuse them (logged with the reason)

    @property
    def lost(self) -> int:
        return self.sent - self.answered


class Producer:
    def __init__(
        self,
        config: Config,
        images: Sequence[SourceImage],
        producer_id: str,
        count: int,
        rate: float,
        latency_file: Path | None = None,
        timeout_s: float = 30.0,
        progress=None,
    ) -> None:
        self.config = config
        self.images = take(images, count)
        self.producer_id = check_id(producer_id, "--producer-id")
        self.rate = rate
        self.latency_file = latency_file
        self.timeout_s = timeout_s
        self.progress = progress
        self._sent: dict[str, float] = {}
        self._received: dict[str, float] = {}
        self._refused = 0
        self._answered = threading.Condition()
        self._listening = threading.Event()
        self._stop_listening = threading.Event()
        self._listen_error: Exception | None = None
        self._wall_offset = time.time() - time.perf_counter()

    def run(self) -> ProducerReport:
        listener = threading.Thread(target=self._listen, name=f"{self.producer_id}-listener", daemon=True)
        listener.start()
        if not self._listening.wait(60) or self._listen_error is not None:
            raise RuntimeError(
                f"could not read {self.config.predictions_topic} at {self.config.bootstrap_servers}: "
                f"{self._listen_error or 'no answer in 60 s'}; is the stack up (`iotpipe status`)?"
            )
        started = time.perf_counter()
        self._send_all()
        self._wait_for_answers()
        self._stop_listening.set()
        listener.join(timeout=10)
        report = self._report(time.perf_counter() - started)
        if self.latency_file is not None:
            self._write_latency_file()
        return report

    def _send_all(self) -> None:
        producer = kafka.producer(self.config)
        start = time.perf_counter()
        try:
            for index, image in enumerate(self.images):
                delay = start + index / self.rate - time.perf_counter() if self.rate > 0 else 0
                if delay > 0:
                    time.sleep(delay)
                self._send(producer, image)
                if self.progress:
                    self.progress(1)
            producer.flush()
        finally:
            producer.close()

    def _send(self, producer, image: SourceImage) -> None:
        """Send one image, or refuse it with the reason the bridge would dead-letter it for."""
        event = ImageEvent(
            source=self.producer_id,
            data=image.read(),
            content_type=image.content_type,
            subject=image.name,
            ground_truth=image.label,
        )
        key, value, headers = event.to_record()
        try:
            ImageEvent.from_record(value, headers, max_bytes=max_image_bytes(self.config.max_request_size))
        except WireError as error:
            log.warning("%s: %s not sent: %s", self.producer_id, image.name, error)
            self._refused += 1
            IMAGES.labels("refused").inc()
            return
        self._sent[event.id] = time.perf_counter()
        IMAGES.labels("sent").inc()
        producer.send(self.config.images_topic, key=key, value=value, headers=headers)

    def _listen(self) -> None:
        try:
            self._listen_for_answers()
        except Exception as error:  # reported by run(), which is waiting for the listener
            self._listen_error = error
            self._listening.set()

    def _listen_for_answers(self) -> None:
        consumer = kafka.consumer(self.config, group_id=None)
        try:
            key = self.producer_id.encode()
            # Results are keyed by producer id, so all of this camera's land in one partition.
            partitions = list(consumer.partitions_for_topic(self.config.predictions_topic) or ())
            if not partitions:
                raise RuntimeError(f"topic {self.config.predictions_topic} does not exist; is the stack up?")
            assigned = TopicPartition(self.config.predictions_topic, kafka.partition_of(key, partitions))
            consumer.assign([assigned])
            consumer.seek_to_end()
            consumer.position(assigned)  # resolve "end" now, before the first image is sent
            self._listening.set()
            while not self._stop_listening.is_set():
                try:
                    batch = consumer.poll(timeout_ms=200)
                except KafkaError as error:  # the broker is away: keep listening, answers will come
                    log.warning("%s; listening again in 0.5 s", error)
                    self._stop_listening.wait(0.5)
                    continue
                for records in batch.values():
                    answered = [answered_id(record.headers) for record in records if record.key == key]
                    self._record_answers(answered)
        finally:
            consumer.close()

    def _record_answers(self, image_ids: list[str | None]) -> None:
        now = time.perf_counter()
        with self._answered:
            for image_id in image_ids:
                if image_id in self._sent and image_id not in self._received:
                    self._received[image_id] = now
                    IMAGES.labels("answered").inc()
                    ROUND_TRIP_SECONDS.observe(now - self._sent[image_id])
            self._answered.notify_all()

    def _wait_for_answers(self) -> None:
        deadline = time.perf_counter() + self.timeout_s
        with self._answered:
            while len(self._received) < len(self._sent) and time.perf_counter() < deadline:
                self._answered.wait(timeout=0.2)

    def _report(self, duration_s: float) -> ProducerReport:
        latencies = [self._received[i] - sent for i, sent in self._sent.items() if i in self._received]
        return ProducerReport(
            self.producer_id, len(self._sent), len(latencies), latencies, duration_s, refused=self._refused
        )

    def _write_latency_file(self) -> None:
        self.latency_file.parent.mkdir(parents=True, exist_ok=True)
        with self.latency_file.open("w") as out:
            out.write("# image_id\tsent_unix_s\treceived_unix_s\tlatency_s (lost: not answered in time)\n")
            for image_id, sent in self._sent.items():
                received = self._received.get(image_id)
                if received is None:
                    out.write(f"{image_id}\t{sent + self._wall_offset:.6f}\tlost\tlost\n")
                else:
                    wall = (sent + self._wall_offset, received + self._wall_offset)
                    out.write(f"{image_id}\t{wall[0]:.6f}\t{wall[1]:.6f}\t{received - sent:.6f}\n")


def answered_id(headers: Headers | None) -> str | None:
    """The image id of a result, read leniently: a result this camera cannot read is not its own."""
    raw = dict(headers or []).get("ce_id")
    return raw.decode(errors="replace") if raw else None
