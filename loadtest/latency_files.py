"""Latency files: the load test's (one latency in seconds per line) and a camera's (iotpipe.latency_file).

Both kinds are read line by line, blank and ``#`` lines left out: a line with tabs is a camera's
image (its latency, or lost), any other one latency.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iotpipe import latency_file
from loadtest.stats import LatencyStats, latency_stats


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
    lines = [_latency(line, f"{path}:{number}") for number, line in latency_file.content_lines(path.read_text())]
    return LatencySample([latency for latency in lines if latency is not None], lines.count(None))


def _latency(line: str, where: str) -> float | None:
    """The latency of one line (None: a camera's lost image)."""
    if "\t" in line:
        return latency_file.parse_line(line, where).latency_s
    try:
        return float(line)
    except ValueError:
        raise ValueError(
            f"{where}: {line.strip()!r} is not a latency in seconds; expected one number per line, or a camera's "
            "latency file (--latency-file of `iotpipe produce`)"
        ) from None


def write_latencies(path: Path, latencies: Sequence[float]) -> None:
    path.write_text("".join(f"{latency:.6f}\n" for latency in latencies))
