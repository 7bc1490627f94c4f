"""What a load test found: one phase per producer count, with where and on what it was measured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.bench import Ceiling
from loadtest.stats import LatencyStats, latency_stats
from producer import ProducerReport


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

    @classmethod
    def from_reports(cls, producers: int, rate: float, reports: Sequence[ProducerReport]) -> Phase:
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
        )

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def throughput(self) -> float:
        """Answered images per second, from the first send to the last answer (or timeout)."""
        return self.answered / self.duration_s

    def as_dict(self) -> dict[str, Any]:
        counts = {"producers": self.producers, "offered_rate": self.offered_rate, "sent": self.sent}
        results = {"answered": self.answered, "lost": self.lost, "duration_s": self.duration_s}
        return counts | results | {"throughput": self.throughput} | self.stats.as_dict()


@dataclass
class Summary:
    provenance: dict[str, Any]
    settings: dict[str, Any]
    ceiling: Ceiling | None = None
    phases: list[Phase] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(phase.lost for phase in self.phases)

    @property
    def pipeline_to_ceiling(self) -> float | None:
        if self.ceiling is None or not self.phases:
            return None
        return max(phase.throughput for phase in self.phases) / self.ceiling.images_per_s

    def as_dict(self) -> dict[str, Any]:
        result = self.provenance | {"settings": self.settings, "phases": [phase.as_dict() for phase in self.phases]}
        if self.ceiling is not None:
            result["ceiling"] = self.ceiling.as_dict() | {"pipeline_to_ceiling": self.pipeline_to_ceiling}
        return result
