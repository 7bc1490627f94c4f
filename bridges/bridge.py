"""The bridge: iot-images -> TorchServe -> iot-predictions, in micro-batches.

The bridge is the ``Inference`` handler over the shared processing loop (iotpipe.processing),
which polls, dead-letters, waits out outages, isolates failing records and commits. Each poll of
``iot-images`` gives a micro-batch. Records that break the wire format, and images the handler
cannot decode, go to ``iot-images-dlq`` with the reason in a header; the rest are sent to
TorchServe ``images_per_request`` images per HTTP request, several requests at once, so that
TorchServe's dynamic batching fills its batches.

Which model version answers: TorchServe's default version (so `iotpipe models set-default`
switches the bridge without a restart), or the version pinned by ``IOTPIPE_MODEL_VERSION``;
with ``IOTPIPE_CANARY_VERSION`` and ``IOTPIPE_CANARY_SHARE``, that share of the images (chosen
by a hash of the image id, so a replay goes the same way) goes to the canary version.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from bridges.clients import PROTOCOLS, InferenceClient, Result, Undecodable, client_for
from iotpipe.config import Config
from iotpipe.processing import Failure, Item, Output, Processed, Service, export_metrics
from iotpipe.service import serve_metrics
from iotpipe.wire import ImageEvent, Prediction, max_image_bytes, now_iso

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
export_metrics("bridge", "inference", dependencies=[client.protocol for client in PROTOCOLS.values()])


class Bridge(Service):
    """``iotpipe bridge``: iot-images -> the model server -> iot-predictions until ``stopping`` is set."""

    def run(self) -> None:
        config = self.config
        serve_metrics(config.bridge_metrics_port, config.metrics_bind_address)
        client = client_for(config)
        log.info("bridge consuming %s from %s", config.images_topic, config.bootstrap_servers)
        try:
            inference = Inference(config, client)
            self.serve(config.images_topic, config.bridge_group_id, inference, LAG, RECORDS.labels("dead_letter").inc)
        finally:
            client.close()


class Inference:
    """The bridge's handler: images in, predictions out, one model server request per chunk of images."""

    service = "bridge"
    stage = "inference"

    def __init__(self, config: Config, client: InferenceClient) -> None:
        self.config = config
        self.client = client
        self.dead_letter_topic = config.dead_letter_topic
        self.output_topics = (config.predictions_topic,)
        self.max_image_bytes = max_image_bytes(config.max_request_size)

    def decode(self, record: ConsumerRecord) -> ImageEvent:
        return ImageEvent.from_record(record.value, record.headers, max_bytes=self.max_image_bytes)

    def process(self, items: Sequence[Item[ImageEvent]]) -> Processed:
        received_at = now_iso()
        BATCH_SIZE.observe(len(items))
        with INFERENCE_SECONDS.time():
            results = self._predict([item.value for item in items])
        inferred_at = now_iso()
        processed = Processed()
        for item, result in zip(items, results, strict=True):
            if isinstance(result, Undecodable):
                processed.failures.append(Failure(item.record, result.reason, f"{self.service}:{self.stage}"))
                continue
            prediction = Prediction.answering(item.value, result, received_at, inferred_at)
            processed.outputs.append(Output(item.record, self.config.predictions_topic, *prediction.to_record()))
        RECORDS.labels("predicted").inc(len(processed.outputs))
        return processed

    def check(self) -> None:
        self.client.check(self.config.model_version or None)

    def warm_up(self) -> None:
        """Every version the bridge routes to answers, over every connection it will use."""
        pinned = self.config.model_version or None
        for version in {pinned, self.config.canary_version or pinned}:
            self.client.warm_up(version)

    def _predict(self, events: list[ImageEvent]) -> list[Result]:
        """Results in the order of ``events``, each image sent to the version it is routed to."""
        routes: dict[str | None, list[int]] = {}
        for index, event in enumerate(events):
            routes.setdefault(self.version_for(event.id), []).append(index)
        results: dict[int, Result] = {}
        for version, indices in routes.items():
            results.update(zip(indices, self.client.predict([events[i] for i in indices], version), strict=True))
        return [results[index] for index in range(len(events))]

    def version_for(self, image_id: str) -> str | None:
        """The canary version for ``canary_share`` of the images, else the pinned (or default) one."""
        config = self.config
        if config.canary_version and in_canary(image_id, config.canary_share):
            return config.canary_version
        return config.model_version or None


def in_canary(image_id: str, share: float) -> bool:
    """Whether ``image_id`` falls in the canary's ``share``: by a hash of the id, so that a replayed image goes the
    same way, and a cryptographic one, so that ids that differ in a digit or two still split evenly (CRC-32 of
    a camera's sequential ids did not)."""
    digest = hashlib.blake2b(image_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share
