"""One simulated camera (``iotpipe produce`` and the tests): a fleet of one.

It sends ``count`` images at ``rate`` per second, open loop, and times each answer; see
producer/fleet.py for how sending, listening and the warm-up before the clock starts work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from iotpipe.config import Config
from producer.fleet import Camera, Fleet, ProducerReport
from producer.images import SourceImage, take


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
        progress: Callable[[int], object] | None = None,
    ) -> None:
        camera = Camera(producer_id, take(images, count), rate, latency_file)
        self.fleet = Fleet(config, [camera], timeout_s, progress)

    def run(self) -> ProducerReport:
        [report] = self.fleet.run()
        return report
