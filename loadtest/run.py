"""``LoadTest``: 1..N producers against the running stack, one phase per producer count.

Every producer is its own process and sends ``count`` images at ``rate`` per second (0: as fast as
it can), open loop, so a saturated pipeline shows up as latency. After each phase the latency files
and the report in ``out`` are (re)written, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from iotpipe.config import Config
from loadtest.bench import Bench
from loadtest.latency_files import write_latencies
from loadtest.processes import ProducerJob, run_producers
from loadtest.provenance import provenance
from loadtest.report import write_report
from loadtest.summary import Phase, Summary
from producer import SourceImage, image_folder


class LoadTest:
    def __init__(
        self,
        config: Config,
        producer_counts: Sequence[int],
        rate: float,
        count: int,
        out: Path,
        images: Path | None = None,
        timeout_s: float = 30.0,
        ceiling: bool = False,
    ) -> None:
        self.config = config
        self.producer_counts = producer_counts
        self.rate = rate
        self.count = count
        self.out = out
        self.images = images or config.data_dir
        self.timeout_s = timeout_s
        self.ceiling = ceiling
        self.run_id = uuid.uuid4().hex[:8]

    def run(self) -> Summary:
        images = image_folder(self.images)
        ceiling = Bench(self.config, self.images).run() if self.ceiling else None
        summary = Summary(provenance(self.config), self.settings(), ceiling)
        for producers in self.producer_counts:
            summary.phases.append(self.phase(producers, images))
            write_report(self.out, summary)
        return summary

    def settings(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "producer_counts": list(self.producer_counts),
            "rate_per_producer": self.rate if self.rate > 0 else None,
            "count_per_producer": self.count,
            "timeout_s": self.timeout_s,
            "images": str(self.images),
        }

    def phase(self, producers: int, images: Sequence[SourceImage]) -> Phase:
        ids = [f"lt-{self.run_id}-p{producers}-{index}" for index in range(1, producers + 1)]
        sample = images[: self.count]
        jobs = [ProducerJob(self.config, sample, id_, self.count, self.rate, self.timeout_s) for id_ in ids]
        with tqdm(total=producers * self.count, desc=f"{producers} producer(s) sending", unit="img") as bar:
            reports = run_producers(jobs, bar.update)
        if not any(report.answered for report in reports):
            raise RuntimeError(
                f"with {producers} producer(s), none of the images was answered within {self.timeout_s:g} s; "
                f"check `iotpipe status` and the bridge log in {self.config.logs_dir}"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        for report in reports:
            write_latencies(self.out / f"latency_p{producers}_{report.producer_id}.txt", report.latencies)
        return Phase.from_reports(producers, self.rate, reports)
