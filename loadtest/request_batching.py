"""Benchmark: one HTTP request per image (TorchServe batches them) against several images per request.

Sends the same images through the bridge's own ``TorchServeClient`` in micro-batches, as the
bridge does, once for each ``images_per_request``, and prints images/s and the latency of a
micro-batch. Needs the running stack (``iotpipe up``).

    python -m loadtest.request_batching --images 512 --micro-batch 32 --per-request 1,4,16,32
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bridges.clients import TorchServeClient
from iotpipe.config import Config
from iotpipe.wire import ImageEvent
from producer.images import image_folder, take


def measure(config: Config, events: list[ImageEvent], micro_batch: int, per_request: int) -> dict[str, float]:
    # Enough requests in flight to carry a whole micro-batch at once, whatever the request size.
    concurrency = max(config.inference_concurrency, -(-micro_batch // per_request))
    client = TorchServeClient(config.replace(images_per_request=per_request, inference_concurrency=concurrency))
    try:
        client.predict(events[:micro_batch])  # warm the connections and the worker
        latencies = []
        started = time.perf_counter()
        for start in range(0, len(events), micro_batch):
            sent = time.perf_counter()
            client.predict(events[start : start + micro_batch])
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    return {
        "images_per_s": len(events) / elapsed,
        "batch_p50_ms": float(np.percentile(latencies, 50) * 1000),
        "batch_p95_ms": float(np.percentile(latencies, 95) * 1000),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512, help="images to send per setting")
    parser.add_argument("--micro-batch", type=int, default=32, help="images per bridge micro-batch")
    parser.add_argument("--per-request", default="1,4,16,32", help="images_per_request values to compare")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, to even out a noisy machine")
    args = parser.parse_args(argv)
    config = Config.load()
    sources = take(image_folder(config.data_dir), args.images)
    events = [ImageEvent(source="bench", data=image.read(), content_type=image.content_type) for image in sources]
    settings = [int(value) for value in args.per_request.split(",")]
    results: dict[int, list[dict[str, float]]] = {setting: [] for setting in settings}
    for _ in range(args.rounds):
        for setting in settings:
            results[setting].append(measure(config, events, args.micro_batch, setting))
    print(f"{args.images} images, micro-batches of {args.micro_batch}, median of {args.rounds} rounds")
    print(f"{'images/request':>15} {'images/s':>9} {'batch p50 ms':>13} {'batch p95 ms':>13}")
    for setting, runs in results.items():
        rate, p50, p95 = (float(np.median([run[key] for run in runs])) for key in runs[0])
        print(f"{setting:>15} {rate:>9.0f} {p50:>13.1f} {p95:>13.1f}")


if __name__ == "__main__":
    main()
