"""Producers as separate processes, spawned (nothing inherited from the parent) and started together.

Each child builds its ``Producer``, waits at a barrier for its siblings, runs, and reports through
one queue: ``sent`` counts for the progress bar, then its ``ProducerReport`` or why it failed.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from iotpipe.config import Config
from producer import Producer, ProducerReport, SourceImage

SENT, DONE, FAILED = "sent", "done", "failed"
START_TIMEOUT_S = 120.0
POLL_S = 1.0


@dataclass(frozen=True)
class ProducerJob:
    config: Config
    images: Sequence[SourceImage]
    producer_id: str
    count: int
    rate: float
    timeout_s: float


def run_producers(jobs: Sequence[ProducerJob], progress: Callable[[int], object]) -> list[ProducerReport]:
    """Run every job in its own process at the same time; the reports in the order of ``jobs``."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    start = context.Barrier(len(jobs))
    processes = [
        context.Process(target=_produce, args=(job, start, events), name=job.producer_id, daemon=True) for job in jobs
    ]
    for process in processes:
        process.start()
    try:
        reports = {report.producer_id: report for report in _collect(processes, events, progress)}
    finally:
        _stop(processes)
    return [reports[job.producer_id] for job in jobs]


def _produce(job: ProducerJob, start, events) -> None:
    try:
        producer = Producer(
            job.config,
            job.images,
            job.producer_id,
            job.count,
            job.rate,
            timeout_s=job.timeout_s,
            progress=lambda sent: events.put((SENT, sent)),
        )
        start.wait(timeout=START_TIMEOUT_S)
        events.put((DONE, producer.run()))
    except Exception as error:
        events.put((FAILED, f"producer {job.producer_id} failed: {type(error).__name__}: {error}"))


def _collect(processes: Sequence[BaseProcess], events, progress: Callable[[int], object]) -> list[ProducerReport]:
    reports: list[ProducerReport] = []
    while len(reports) < len(processes):
        try:
            kind, value = events.get(timeout=POLL_S)
        except queue.Empty:
            _check_alive(processes)
            continue
        if kind == SENT:
            progress(value)
        elif kind == DONE:
            reports.append(value)
        else:
            raise RuntimeError(value)
    return reports


def _check_alive(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        if process.exitcode not in (None, 0):
            raise RuntimeError(f"producer process {process.name} exited with code {process.exitcode} before reporting")


def _stop(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join()
