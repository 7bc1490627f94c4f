"""The bridge: iot-images -> TorchServe -> iot-predictions, in micro-batches.

Each poll of ``iot-images`` gives a micro-batch. Records that break the wire format, and
images the handler cannot decode, go to ``iot-images-dlq`` with the reason in a header; the
rest are sent to TorchServe ``images_per_request`` images per HTTP request, several requests
at once, so that TorchServe's dynamic batching fills its batches. Offsets are committed only
after every result and dead letter of the micro-batch has been acknowledged by Kafka, so a
crash replays the batch instead of losing it (the consumer's writes are idempotent).

Which model version answers: TorchServe's default version (so `iotpipe models set-default`
switches the bridge without a restart), or the version pinned by ``IOTPIPE_MODEL_VERSION``;
with ``IOTPIPE_CANARY_VERSION`` and ``IOTPIPE_CANARY_SHARE``, that share of the images (chosen
by a hash of the image id, so a replay goes the same way) goes to the canary version.
"""

from __future__ import annotations

import logging
import threading
import zlib
from pathlib import Path

from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from bridges.clients import InferenceClient, InferenceUnavailable, client_for
from iotpipe import kafka
from iotpipe.config import Config
from iotpipe.service import retry_until_done, serve_metrics
from iotpipe.wire import Headers, ImageEvent, Prediction, WireError, dead_letter_headers, now_iso

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


class Bridge:
    def __init__(self, config: Config, ready_file: Path | None = None) -> None:
        self.config = config
        self.ready_file = ready_file
        self.stopping = threading.Event()

    def run(self) -> None:
        serve_metrics(self.config.bridge_metrics_port, self.config.metrics_bind_address)
        consumer = kafka.consumer(self.config, self.config.images_topic, group_id=self.config.bridge_group_id)
        producer = kafka.producer(self.config)
        client = client_for(self.config)
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

    def _process(self, records: list[ConsumerRecord], client: InferenceClient, producer) -> None:
        received_at = now_iso()
        events: list[ImageEvent] = []
        outgoing: list[tuple[str, bytes, bytes, Headers]] = []
        for record in records:
            try:
                events.append(ImageEvent.from_record(record.value, record.headers))
            except WireError as error:
                outgoing.append(self._dead_letter(record.key, record.value, record.headers, str(error)))
        BATCH_SIZE.observe(len(events))
        with INFERENCE_SECONDS.time():
            predictions = retry_until_done(
                lambda: self._predict(client, events), (InferenceUnavailable,), self.stopping, log
            )
        inferred_at = now_iso()
        for event, result in zip(events, predictions, strict=True):
            if "error" in result:
                outgoing.append(self._dead_letter(*event.to_record(), result["error"]))
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
            outgoing.append((self.config.predictions_topic, *prediction.to_record()))
        kafka.send_all(producer, outgoing)
        RECORDS.labels("predicted").inc(sum(topic == self.config.predictions_topic for topic, *_ in outgoing))
        RECORDS.labels("dead_letter").inc(sum(topic == self.config.dead_letter_topic for topic, *_ in outgoing))

    def _predict(self, client: InferenceClient, events: list[ImageEvent]) -> list[dict]:
        """Predictions in the order of ``events``, each image sent to the version it is routed to."""
        routes: dict[str | None, list[int]] = {}
        for index, event in enumerate(events):
            routes.setdefault(self.version_for(event.id), []).append(index)
        predictions: list[dict] = [{}] * len(events)
        for version, indices in routes.items():
            for index, prediction in zip(indices, client.predict([events[i] for i in indices], version), strict=True):
                predictions[index] = prediction
        return predictions

    def version_for(self, image_id: str) -> str | None:
        """The canary version for ``canary_share`` of the images, else the pinned (or default) one."""
        config = self.config
        if config.canary_version and zlib.crc32(image_id.encode()) / 2**32 < config.canary_share:
            return config.canary_version
        return config.model_version or None

    def _dead_letter(self, key, value, headers, reason: str) -> tuple[str, bytes, bytes, Headers]:
        log.warning("dead letter: %s", reason)
        return self.config.dead_letter_topic, key, value, dead_letter_headers(headers, reason)
