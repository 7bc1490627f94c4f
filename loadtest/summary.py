"""What a load test found: one phase per producer count (or per search step), the knee, the SLO search.

Rules, stated once here and printed with the results:
- a phase *keeps up* when nothing is lost and it answered at least ``KEEP_UP`` of its offered rate;
- the *knee* is the first paced phase, by camera count, that does not keep up or whose p95 is more
  than ``KNEE_FACTOR`` times the first phase's;
- a phase is *within* a p95 bound when it keeps up and its p95 is at most the bound.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.bench import Ceiling
from loadtest.stats import LatencyStats, latency_stats
from producer import ProducerReport

MS = 1000.0
KEEP_UP = 0.9
KNEE_FACTOR = 2.0
KNEE_RULE = (
    f"the first paced phase, by camera count, that loses an image, answers less than {KEEP_UP:.0%} of its "
    f"offered rate, or whose p95 is over {KNEE_FACTOR:g} x the first phase's"
)


@dataclass(frozen=True)
class Phase:
    """``producers`` cameras at once; latencies and durations in seconds."""

    producers: int
    offered_rate: float | None  # images/s over all producers; None: each sends as fast as it can
    sent: int
    answered: int
    duration_s: float
    stats: LatencyStats
    latencies: list[float] = field(repr=False)
    first_to_median: float | None = None  # the worst camera's first-image latency over its median
    loadgen_cpu_s: float = 0.0  # user + system CPU of the load generator's processes
    processes: int = 1

    @classmethod
    def from_reports(
        cls,
        producers: int,
        rate: float,
        reports: Sequence[ProducerReport],
        loadgen_cpu_s: float = 0.0,
        processes: int = 1,
    ) -> Phase:
        """``rate`` per producer (0: as fast as possible); the phase lasts as long as its slowest producer."""
        latencies = [latency for report in reports for latency in report.latencies]
        return cls(
            producers,
            producers * rate if rate > 0 else None,
            sum(report.sent for report in reports),
            len(latencies),
            max(report.duration_s for report in reports),
            latency_stats(latencies),
            latencies,
            first_to_median(reports),
            loadgen_cpu_s,
            processes,
        )

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def throughput(self) -> float:
        """Answered images per second, from the first send to the last answer (or timeout)."""
        return self.answered / self.duration_s

    @property
    def loadgen_cores(self) -> float:
        """The load generator's CPU seconds per second of the phase: cores it kept busy."""
        return self.loadgen_cpu_s / self.duration_s

    @property
    def label(self) -> str:
        rate = "max" if self.offered_rate is None else f"{self.offered_rate / self.producers:.4g}"
        return f"{self.producers} x {rate}"

    def keeps_up(self) -> bool:
        offered = self.offered_rate if self.offered_rate is not None else 0.0
        return self.lost == 0 and self.throughput >= KEEP_UP * offered

    def as_dict(self) -> dict[str, Any]:
        counts = {"producers": self.producers, "offered_rate": self.offered_rate, "sent": self.sent}
        results = {"answered": self.answered, "lost": self.lost, "duration_s": self.duration_s}
        warm_up = {"first_to_median": self.first_to_median}
        loadgen = {"processes": self.processes, "loadgen_cpu_s": self.loadgen_cpu_s}
        loadgen["loadgen_cores"] = self.loadgen_cores
        return counts | results | {"throughput": self.throughput} | self.stats.as_dict() | warm_up | loadgen


def first_to_median(reports: Sequence[ProducerReport]) -> float | None:
    """The largest ratio of a camera's first-image latency to its median latency (None: no first answered)."""
    ratios = [
        report.first_latency / statistics.median(report.latencies)
        for report in reports
        if report.first_latency is not None
    ]
    return max(ratios, default=None)


@dataclass(frozen=True)
class Knee:
    phase: Phase
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"producers": self.phase.producers, "offered_rate": self.phase.offered_rate, "reason": self.reason}


def find_knee(phases: Sequence[Phase]) -> Knee | None:
    """The first paced phase that falls behind or whose p95 more than doubles over the first's."""
    paced = sorted((phase for phase in phases if phase.offered_rate is not None), key=lambda phase: phase.producers)
    for phase in paced:
        if phase.lost:
            reason = f"{phase.lost} of {phase.sent} images lost"
        elif not phase.keeps_up():
            reason = f"answered {phase.throughput:.1f} images/s of {phase.offered_rate:g} offered"
        elif phase.stats.p95 > KNEE_FACTOR * paced[0].stats.p95:
            reason = f"p95 {phase.stats.p95 * MS:.1f} ms, over {KNEE_FACTOR:g} x {paced[0].stats.p95 * MS:.1f} ms"
            reason += f" at {paced[0].label}"
        else:
            continue
        return Knee(phase, f"{reason}; the load generator used {phase.loadgen_cores:.2f} cores")
    return None


@dataclass(frozen=True)
class SloSearch:
    """The steps that looked for the highest offered load of ``producers`` cameras within a p95 bound."""

    producers: int
    slo_p95_s: float
    steps: list[Phase]

    def within(self, phase: Phase) -> bool:
        return phase.keeps_up() and phase.stats.p95 <= self.slo_p95_s

    @property
    def best(self) -> Phase | None:
        """The passing step with the highest throughput (an unpaced step counts by what it answered)."""
        return max((step for step in self.steps if self.within(step)), key=lambda s: s.throughput, default=None)

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        steps = [{"offered_rate": s.offered_rate, "p95": s.stats.p95, "within": self.within(s)} for s in self.steps]
        return {
            "producers": self.producers,
            "slo_p95_s": self.slo_p95_s,
            "best_offered_rate": None if best is None else best.offered_rate or best.throughput,
            "steps": steps,
        }


@dataclass
class Summary:
    provenance: dict[str, Any]
    settings: dict[str, Any]
    ceiling: Ceiling | None = None
    phases: list[Phase] = field(default_factory=list)
    searches: list[SloSearch] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(phase.lost for phase in self.phases)

    @property
    def knee(self) -> Knee | None:
        """Only for a sweep over camera counts at one rate; a search varies the rate instead."""
        return None if self.searches else find_knee(self.phases)

    @property
    def fastest(self) -> Phase | None:
        return max(self.phases, key=lambda phase: phase.throughput, default=None)

    @property
    def pipeline_to_ceiling(self) -> float | None:
        if self.ceiling is None or not self.phases:
            return None
        return self.fastest.throughput / self.ceiling.images_per_s

    @property
    def pipeline_only_to_ceiling(self) -> float | None:
        """As ``pipeline_to_ceiling``, against the ceiling scaled to the cores the load generator left free."""
        if self.ceiling is None or not self.phases:
            return None
        cores = self.provenance["machine"]["cores"]
        left = max(cores - self.fastest.loadgen_cores, 0.0) / cores
        return self.pipeline_to_ceiling / left if left else None

    def as_dict(self) -> dict[str, Any]:
        result = self.provenance | {"settings": self.settings, "phases": [phase.as_dict() for phase in self.phases]}
        knee = self.knee
        result["knee"] = None if knee is None else knee.as_dict()
        result["knee_rule"] = KNEE_RULE
        if self.searches:
            result["slo_search"] = [search.as_dict() for search in self.searches]
        if self.ceiling is not None:
            result["ceiling"] = self.ceiling.as_dict() | {
                "pipeline_to_ceiling": self.pipeline_to_ceiling,
                "pipeline_only_to_ceiling": self.pipeline_only_to_ceiling,
            }
        return result
