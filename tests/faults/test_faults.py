"""Faults during a run of 2,000 images: every image ends up stored exactly once, nothing is lost.

Each fault strikes a few seconds into the run, while images flow at 100 per second: a crash
(SIGKILL of the whole process group) of the bridge, the consumer or TorchServe, or a restart
of the Kafka broker or the CouchDB server. The component is brought back the way `iotpipe up`
starts it. The longest stalls in the producer's answers and in CouchDB's stored_at times are reported as the
time to recover (test-artifacts/faults.json).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from iotpipe.config import Config
from iotpipe.wire import parse_time
from producer import Producer
from stack import Stack
from tests.integration.helpers import unique_producer_id, wait_for_documents

IMAGES = 2000
RATE = 100
FAULT_AFTER_S = 5
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults.json"


def crash_and_restart(name: str) -> Callable[[Stack], None]:
    def fault(stack: Stack) -> None:
        service = getattr(stack, name)
        service.kill()
        time.sleep(1)
        service.start()

    return fault


def crash_torchserve(stack: Stack) -> None:
    stack.torchserve.kill()
    time.sleep(1)
    stack.start_torchserve()


def restart(name: str) -> Callable[[Stack], None]:
    def fault(stack: Stack) -> None:
        getattr(stack, f"{name}").stop()
        time.sleep(1)
        getattr(stack, f"start_{name}")()

    return fault


FAULTS = {
    "bridge killed": crash_and_restart("bridge"),
    "consumer killed": crash_and_restart("consumer"),
    "torchserve killed": crash_torchserve,
    "kafka restarted": restart("kafka"),
    "couchdb restarted": restart("couchdb"),
}


def longest_gap_s(times: list[float]) -> float:
    return max(later - earlier for earlier, later in itertools.pairwise(sorted(times)))


def answer_times(latency_file: Path) -> list[float]:
    rows = (line.split("\t") for line in latency_file.read_text().splitlines() if not line.startswith("#"))
    return [float(columns[2]) for columns in rows if columns[2] != "lost"]


@pytest.fixture(scope="module")
def recoveries():
    """Each fault's longest stall in answers, kept in test-artifacts/faults.json for the README's table."""
    measured: dict[str, dict] = {}
    yield measured
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(measured, indent=2))


@pytest.mark.parametrize("fault", FAULTS)
def test_every_image_is_stored_exactly_once_across(
    fault: str, stack: Config, images, recoveries: dict, tmp_path: Path
) -> None:
    producer_id = unique_producer_id(fault.split()[0])
    latency_file = tmp_path / "latency.tsv"
    producer = Producer(
        stack, images, producer_id=producer_id, count=IMAGES, rate=RATE, latency_file=latency_file, timeout_s=180
    )
    sending = threading.Thread(target=lambda: setattr(sending, "report", producer.run()))
    sending.start()
    time.sleep(FAULT_AFTER_S)
    FAULTS[fault](Stack(stack))
    sending.join()

    report = sending.report
    assert (report.sent, report.lost) == (IMAGES, 0), f"{report.lost} images unanswered after {fault}"
    documents = wait_for_documents(stack, producer_id, expected=IMAGES)
    ids = [document["_id"] for document in documents]
    assert len(ids) == len(set(ids)) == IMAGES
    answers = longest_gap_s(answer_times(latency_file))
    storage = longest_gap_s([parse_time(document["stored_at"]) for document in documents])
    recoveries[fault] = {
        "sent": IMAGES,
        "stored_once": len(ids),
        "lost": report.lost,
        "longest_stall_in_answers_s": round(answers, 1),
        "longest_stall_in_storage_s": round(storage, 1),
    }
    print(f"\n{fault}: {IMAGES} sent, {len(ids)} stored once each; stalls {answers:.1f} s / {storage:.1f} s")
