"""When each image of a camera leaves: open loop, at a steady rate, with jitter rather than in lock-step.

Cameras that all send at start + i / rate hit the pipeline in bursts (every camera's image i at
once). Each camera therefore starts at a random phase within its first interval and every send
moves by up to ``JITTER`` of an interval either way; the mean rate stays exactly ``rate``.
"""

from __future__ import annotations

import random

JITTER = 0.1  # of the interval between two images; below 0.5, so the images keep their order


def send_offsets(count: int, rate: float, rng: random.Random, jitter: float = JITTER) -> list[float]:
    """Seconds after the clock starts at which images 0..count-1 leave; ``rate`` 0: all at once, unpaced."""
    if rate <= 0:
        return [0.0] * count
    interval = 1.0 / rate
    phase = rng.uniform(jitter, 1.0 - jitter) * interval
    return [(index + rng.uniform(-jitter, jitter)) * interval + phase for index in range(count)]
