"""The bridge: iot-images -> TorchServe -> iot-predictions, in micro-batches.

Each poll of ``iot-images`` gives a micro-batch. Records that break the wire format, and
images the handler cannot decode, go to ``iot-images-dlq`` with the reason in a header; the
rest are sent to TorchServe ``images_per_request`` images per HTTP request, several requests
at once, so that TorchServe's dynamic batching fills its batches. Offsets are committed only
after every result and dead letter of the micro-batch has been acknowledged by Kafka, so a
crash replays the batch instead of losing it (the consumer's writes are idempotent).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from iotpipe import kafka
from iotpipe.config import Config
from iotpipe.service import retry_until_done, serve_metrics
from iotpipe.torchserve import bearer
from iotpipe.wire import ImageEvent, Prediction, WireError, dead_letter_headers, now_iso

log = logging.getLogger("iotpipe.bridge")

RECORDS = Counter("iotpipe_bridge_records", "Records taken from iot-images, by outcome", ["outcome"])
for outcome in ("predicted", "dead_letter"):
    RECORDS.labels(outcome)  # exported as 0 before the first one
BATCH_SIZE = Histogram(
    "iotpipe_bridge_batch_size", "Images per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
INFERENCE_SECONDS = Histogram(
    "iotpipe_bridge_inference_seconds",
    "TorchServe round trip of one micro-batch",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
LAG = Gauge("iotpipe_bridge_consumer_lag", "Records not yet taken from iot-images")


class InferenceUnavailable(RuntimeError):
    """TorchServe did not answer a request; the batch is retried, not dropped."""


class TorchServeClient:
    """TorchServe's native inference API, ``images_per_request`` images per multipart request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = f"{config.inference_url}/predictions/{config.model_name}"
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=config.inference_concurrency)
        self._headers = bearer(config.key_file, "inference")

    def predict(self, images: Sequence[ImageEvent]) -> list[dict]:
        """One prediction (or ``{"error": reason}``) per image, in order."""
        size = self.config.images_per_request
        chunks = [images[start : start + size] for start in range(0, len(images), size)]
        answers = self._pool.map(self._post, chunks)
        return [prediction for answer in answers for prediction in answer]

    def _post(self, chunk: Sequence[ImageEvent]) -> list[dict]:
        files = [(f"image{i}", (event.id, event.data, event.content_type)) for i, event in enumerate(chunk)]
        for attempt in range(2):
            try:
                response = self._session().post(
                    self.url, files=files, headers=self._headers, timeout=self.config.request_timeout_s
                )
            except requests.RequestException as error:
                raise InferenceUnavailable(f"TorchServe at {self.url} did not answer: {error}") from None
            if attempt == 0 and "Token Authorization failed" in response.text:
                self._headers = bearer(self.config.key_file, "inference")  # keys were regenerated
                continue
            break
        if not response.ok:
            raise InferenceUnavailable(
                f"TorchServe at {self.url} answered {response.status_code}: {response.text[:300]}"
            )
        answer = response.json()
        if not isinstance(answer, list) or len(answer) != len(chunk):
            raise InferenceUnavailable(f"TorchServe answered {len(chunk)} images with {answer!r:.300}")
        return answer

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def close(self) -> None:
        self._pool.shutdown()


class Bridge:
    def __init__(self, config: Config, ready_file: Path | None = None) -> None:
        self.config = config
        self.ready_file = ready_file
        self.stopping = threading.Event()

    def run(self) -> None:
        serve_metrics(self.config.bridge_metrics_port)
        consumer = kafka.consumer(self.config, self.config.images_topic, group_id=self.config.bridge_group_id)
        producer = kafka.producer(self.config)
        client = TorchServeClient(self.config)
        log.info("bridge consuming %s from %s", self.config.images_topic, self.config.bootstrap_servers)
        try:
            kafka.process_batches(
                consumer,
                lambda records: self._process(records, client, producer),
                self.stopping,
                ready_file=self.ready_file,
                lag=LAG,
            )
        finally:
            client.close()
            producer.close()
            consumer.close()

    def _process(self, records: list[ConsumerRecord], client: TorchServeClient, producer) -> None:
        received_at = now_iso()
        events: list[ImageEvent] = []
        for record in records:
            try:
                events.append(ImageEvent.from_record(record.value, record.headers))
            except WireError as error:
                self._dead_letter(producer, record.key, record.value, record.headers, str(error))
        BATCH_SIZE.observe(len(events))
        with INFERENCE_SECONDS.time():
            predictions = retry_until_done(
                lambda: client.predict(events) if events else [], (InferenceUnavailable,), self.stopping, log
            )
        inferred_at = now_iso()
        for event, result in zip(events, predictions, strict=True):
            if "error" in result:
                key, value, headers = event.to_record()
                self._dead_letter(producer, key, value, headers, result["error"])
                continue
            prediction = Prediction(
                id=event.id,
                producer_id=event.source,
                subject=event.subject,
                ground_truth=event.ground_truth,
                label=result["label"],
                scores=result["scores"],
                model=result["model"],
                model_version=result["model_version"],
                sent_at=event.time,
                received_at=received_at,
                inferred_at=inferred_at,
                content_type=event.content_type,
                image=event.data,
            )
            key, value, headers = prediction.to_record()
            producer.send(self.config.predictions_topic, key=key, value=value, headers=headers)
            RECORDS.labels("predicted").inc()
        producer.flush()

    def _dead_letter(self, producer, key, value, headers, reason: str) -> None:
        log.warning("dead letter: %s", reason)
        producer.send(self.config.dead_letter_topic, key=key, value=value, headers=dead_letter_headers(headers, reason))
        RECORDS.labels("dead_letter").inc()
