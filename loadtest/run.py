"""``LoadTest``: 1..N cameras against the running stack, one phase per camera count.

The cameras of a phase are hosted by ``processes`` load-generator processes (one Kafka producer and
one listener each, shared by their cameras) and send ``count`` images each at ``rate`` per second,
open loop, so a saturated pipeline shows up as latency. With ``rate`` 0 and a p95 bound, each
camera count searches for the highest offered load within the bound (loadtest/search.py) instead.
With ``open_loop_count``, one unpaced phase follows: the largest camera count sends that many images
each as fast as it can, for the throughput. Camera ids, and so each camera's jitter, follow from
``run_id`` and the phase's place: two load tests with one ``run_id`` send alike. After each phase
the latency files and the report in ``out`` are (re)written, so a run stopped early keeps what it
measured.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from itertools import count as numbered
from pathlib import Path
from typing import Any

from tqdm import tqdm

from iotpipe.config import Config
from loadtest.bench import Bench
from loadtest.latency_files import write_latencies
from loadtest.processes import FleetJob, run_fleets
from loadtest.provenance import provenance
from loadtest.report import write_report
from loadtest.search import search_slo
from loadtest.summary import Phase, Summary
from producer import Camera, SourceImage, image_folder
from producer.images import take


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
        processes: int = 1,
        slo_p95_s: float | None = None,
        open_loop_count: int | None = None,
        run_id: str | None = None,
    ) -> None:
        self.config = config
        self.producer_counts = producer_counts
        self.rate = rate
        self.count = count
        self.out = out
        self.images = images or config.data_dir
        self.timeout_s = timeout_s
        self.ceiling = ceiling
        self.processes = processes
        self.slo_p95_s = slo_p95_s
        self.open_loop_count = open_loop_count
        self.run_id = run_id or new_run_id()
        self._phase_numbers = numbered(1)

    def run(self) -> Summary:
        images = image_folder(self.images)
        sample = take(images, self.count)
        ceiling = Bench(self.config, self.images).run() if self.ceiling else None
        summary = Summary(provenance(self.config), self.settings(), ceiling)
        for producers in self.producer_counts:
            if self.slo_p95_s is None or self.rate > 0:
                summary.phases.append(self.phase(producers, self.rate, sample))
            else:
                measure = functools.partial(self.phase, producers, sample=sample)
                search = search_slo(measure, producers, self.slo_p95_s)
                summary.phases += search.steps
                summary.searches.append(search)
            write_report(self.out, summary)
        if self.open_loop_count:
            summary.phases.append(self.phase(max(self.producer_counts), 0.0, take(images, self.open_loop_count)))
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
            "processes": self.processes,
            "slo_p95_s": self.slo_p95_s,
            "open_loop_count_per_producer": self.open_loop_count,
            "model_server": self.config.model_server,
            "inference_protocol": self.config.inference_protocol,
            "model_version_pinned": self.config.model_version or None,
        }

    def phase(self, producers: int, rate: float, sample: Sequence[SourceImage]) -> Phase:
        """One phase: ``producers`` cameras at ``rate`` images/s each (0: unpaced), spread over the processes."""
        number = next(self._phase_numbers)
        ids = [f"lt-{self.run_id}-{number}-p{producers}-{index}" for index in range(1, producers + 1)]
        cameras = [Camera(id_, sample, rate) for id_ in ids]
        processes = min(self.processes, producers)
        jobs = [FleetJob(self.config, cameras[first::processes], self.timeout_s) for first in range(processes)]
        label = f"{producers} camera(s) x {rate:.4g}/s" if rate > 0 else f"{producers} camera(s) unpaced"
        with tqdm(total=producers * len(sample), desc=label, unit="img") as bar:
            results = run_fleets(jobs, bar.update)
        reports = [report for result in results for report in result.reports]
        if not any(report.answered for report in reports):
            raise RuntimeError(
                f"with {producers} producer(s), none of the images was answered within {self.timeout_s:g} s; "
                f"check `iotpipe status` and the bridge log in {self.config.logs_dir}"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        for report in reports:
            write_latencies(self.out / f"latency_p{producers}_{report.producer_id}.txt", report.latencies)
        loadgen_cpu_s = sum(result.cpu_s for result in results)
        return Phase.from_reports(producers, rate, reports, loadgen_cpu_s, processes)


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]
