"""``--rate max --slo-p95``: the highest offered load whose p95 stays within a bound, found by measuring.

The first step sends unpaced (every camera as fast as it can): what it answers per second bounds
any load the pipeline can keep up with. If even that step is within the bound, it is the answer.
Otherwise ``BISECTIONS`` paced steps bisect the rate per camera between 0 (within, trivially) and
the unpaced throughput, each step keeping the half that holds the boundary: the answer is known to
1/2**BISECTIONS of the unpaced throughput.
"""

from __future__ import annotations

from collections.abc import Callable

from loadtest.summary import Phase, SloSearch

BISECTIONS = 4


def search_slo(measure: Callable[[float], Phase], producers: int, slo_p95_s: float) -> SloSearch:
    """``measure(rate per camera)`` runs one phase (0: unpaced); returns every step measured."""
    search = SloSearch(producers, slo_p95_s, [measure(0.0)])
    if search.within(search.steps[0]):
        return search
    within, beyond = 0.0, search.steps[0].throughput / producers
    for _ in range(BISECTIONS):
        rate = (within + beyond) / 2
        step = measure(rate)
        search.steps.append(step)
        if search.within(step):
            within = rate
        else:
            beyond = rate
    return search
