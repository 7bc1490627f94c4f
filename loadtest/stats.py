"""Latency statistics: numpy's percentiles (linear interpolation) over one set of latencies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Seconds, except ``count`` (how many latencies were summarised)."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def percentiles(values: Sequence[float], ranks: Sequence[float] = PERCENTILES) -> list[float]:
    """The ``ranks`` percentiles of ``values`` by linear interpolation between closest ranks."""
    if len(values) == 0:
        raise ValueError("cannot take percentiles of no values: nothing was answered, or the latency file is empty")
    return [float(p) for p in np.percentile(np.asarray(values, dtype=float), ranks)]


def latency_stats(latencies: Sequence[float]) -> LatencyStats:
    p50, p90, p95, p99 = percentiles(latencies)
    return LatencyStats(len(latencies), float(np.mean(latencies)), p50, p90, p95, p99, float(np.max(latencies)))
