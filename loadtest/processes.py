"""Load-generator processes, spawned (nothing inherited from the parent) and started together.

Each child hosts a ``Fleet`` of cameras: it prepares it (connections, metadata, listener
positioned), waits at a barrier for its siblings, runs it, and reports through one queue: sent
counts for the progress bar (at most every ``PROGRESS_S``), then its reports and the CPU seconds
(user + system) the process spent while its cameras' clocks ran, or why it failed.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from iotpipe.config import Config
from producer import Camera, Fleet, ProducerReport

SENT, DONE, FAILED = "sent", "done", "failed"
START_TIMEOUT_S = 120.0
POLL_S = 1.0
PROGRESS_S = 0.25


@dataclass(frozen=True)
class FleetJob:
    """The cameras that one load-generator process hosts, and how long it waits for an answer."""

    config: Config
    cameras: Sequence[Camera]
    timeout_s: float


@dataclass(frozen=True)
class FleetResult:
    reports: list[ProducerReport]
    cpu_s: float  # the process's user + system CPU seconds from its clock's start to its last answer


def run_fleets(jobs: Sequence[FleetJob], progress: Callable[[int], object]) -> list[FleetResult]:
    """Run every job in its own process at the same time; the results in the order of ``jobs``."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    start = context.Barrier(len(jobs))
    processes = [
        context.Process(target=_run_fleet, args=(index, job, start, events), name=f"fleet-{index}", daemon=True)
        for index, job in enumerate(jobs)
    ]
    for process in processes:
        process.start()
    try:
        results = _collect(processes, events, progress)
    finally:
        _stop(processes)
    return [results[index] for index in range(len(jobs))]


def _run_fleet(index: int, job: FleetJob, start, events) -> None:
    try:
        progress = _Progress(events)
        fleet = Fleet(job.config, job.cameras, job.timeout_s, progress)
        fleet.prepare()
        start.wait(timeout=START_TIMEOUT_S)
        cpu_before = time.process_time()
        reports = fleet.run()
        progress.flush()
        events.put((DONE, (index, FleetResult(reports, time.process_time() - cpu_before))))
    except Exception as error:
        names = ", ".join(camera.producer_id for camera in job.cameras[:3])
        events.put((FAILED, f"load generator {index} (cameras {names}...) failed: {type(error).__name__}: {error}"))


class _Progress:
    """Counts sends and passes them on at most every ``PROGRESS_S``: a queue put per image costs CPU."""

    def __init__(self, events) -> None:
        self.events = events
        self.pending = 0
        self.last = time.perf_counter()

    def __call__(self, sent: int) -> None:
        self.pending += sent
        if time.perf_counter() - self.last >= PROGRESS_S:
            self.flush()

    def flush(self) -> None:
        self.events.put((SENT, self.pending))
        self.pending, self.last = 0, time.perf_counter()


def _collect(processes: Sequence[BaseProcess], events, progress: Callable[[int], object]) -> dict[int, FleetResult]:
    results: dict[int, FleetResult] = {}
    while len(results) < len(processes):
        try:
            kind, value = events.get(timeout=POLL_S)
        except queue.Empty:
            _check_alive(processes)
            continue
        if kind == SENT:
            progress(value)
        elif kind == DONE:
            index, result = value
            results[index] = result
        else:
            raise RuntimeError(value)
    return results


def _check_alive(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        if process.exitcode not in (None, 0):
            raise RuntimeError(f"load generator {process.name} exited with code {process.exitcode} before reporting")


def _stop(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join()
