"""The services' Prometheus endpoints, read with prometheus_client's own text-format parser."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One read of a /metrics page: every sample, by its full name (``..._total``, ``..._sum``)."""

    samples: tuple[Sample, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        """Samples of a page in the Prometheus text format; ValueError if it is not one."""
        families = text_string_to_metric_families(text)
        return cls(tuple(Sample(s.name, dict(s.labels), s.value) for family in families for s in family.samples))

    def value(self, name: str, **labels: str) -> float | None:
        """Sum of the samples called ``name`` whose labels include ``labels``; None if there is none."""
        matching = [s.value for s in self.samples if s.name == name and _has(s.labels, labels)]
        return math.fsum(matching) if matching else None

    def mean(self, histogram: str) -> float | None:
        """Mean observation of a histogram since the service started; None before the first one."""
        total, count = self.value(f"{histogram}_sum"), self.value(f"{histogram}_count")
        if total is None or not count:
            return None
        return total / count


def scrape(url: str, timeout_s: float = 1.0) -> Scrape | None:
    """The samples at ``url``, or None when nothing there answers with a metrics page."""
    try:
        response = requests.get(url, timeout=timeout_s)
        response.raise_for_status()
        return Scrape.parse(response.text)
    except (requests.RequestException, ValueError):
        return None


def total(values: Iterable[float | None]) -> float | None:
    """The sum when every part is known: a partial count would read as the whole one."""
    values = list(values)
    return None if any(value is None for value in values) else math.fsum(values)


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(name) == value for name, value in wanted.items())
