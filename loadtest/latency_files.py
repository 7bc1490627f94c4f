"""Latency files: the load test's (one latency in seconds per line) and the producer's (tab-separated).

The producer's file has ``#`` header lines and columns image_id, sent, received, latency, where the
latency ``lost`` marks an image that was not answered in time. Both kinds are read the same way:
the last column of each line that is not blank or a comment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.stats import LatencyStats, latency_stats

LOST = "lost"


@dataclass(frozen=True)
class LatencySample:
    latencies: list[float] = field(default_factory=list)
    lost: int = 0

    @classmethod
    def combine(cls, samples: Iterable[LatencySample]) -> LatencySample:
        samples = list(samples)
        return cls([x for s in samples for x in s.latencies], sum(s.lost for s in samples))


@dataclass(frozen=True)
class Analysis:
    name: str
    stats: LatencyStats
    lost: int

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.name, **self.stats.as_dict(), "lost": self.lost}


def analyze(paths: Sequence[Path]) -> list[Analysis]:
    """Statistics of each file and, when there are several, of all of them together (named "all")."""
    named = [(str(path), read_latencies(path)) for path in paths]
    if len(named) > 1:
        named.append(("all", LatencySample.combine(sample for _, sample in named)))
    return [Analysis(name, _stats(name, sample), sample.lost) for name, sample in named]


def _stats(name: str, sample: LatencySample) -> LatencyStats:
    if not sample.latencies:
        raise ValueError(f"{name}: no answered image to take latencies from ({sample.lost} lost)")
    return latency_stats(sample.latencies)


def read_latencies(path: Path) -> LatencySample:
    latencies: list[float] = []
    lost = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        value = line.split()[-1]
        if value == LOST:
            lost += 1
            continue
        try:
            latencies.append(float(value))
        except ValueError:
            raise ValueError(
                f"{path}:{number}: {value!r} is neither a latency in seconds nor {LOST!r}; expected one number "
                "per line, or a producer latency file (--latency-file of `iotpipe produce`)"
            ) from None
    return LatencySample(latencies, lost)


def write_latencies(path: Path, latencies: Sequence[float]) -> None:
    path.write_text("".join(f"{latency:.6f}\n" for latency in latencies))
