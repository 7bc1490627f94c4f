"""Crashes during a run of 2,000 images: the supervisor restarts the component, nothing is lost.

A few seconds into each run, while images flow at 100 per second, one component of the stack
(the Kafka broker, the CouchDB server, the model server, the bridge or the consumer) is killed with
SIGKILL, its whole process group at once, and nobody restarts it by hand: the supervisor that
`iotpipe up` started must bring it back. Every image must end up stored exactly once. The longest
stalls in the producer's answers and in CouchDB's stored_at times, and the restarts that
`iotpipe status` shows, are kept in test-artifacts/faults.json.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from iotpipe import latency_file
from iotpipe.config import Config
from iotpipe.wire import parse_time
from producer import Producer
from stack import Stack
from tests.integration.helpers import unique_producer_id, wait_for_documents

IMAGES = 2000
RATE = 100
FAULT_AFTER_S = 5
COMPONENTS = ("kafka", "couchdb", "model_server", "bridge", "consumer")  # attributes of Stack
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults.json"


def restarts_in_status(stack: Stack, name: str) -> int:
    return next(row.restarts for row in stack.status() if row.name == name)


def longest_gap_s(times: list[float]) -> float:
    return max(later - earlier for earlier, later in itertools.pairwise(sorted(times)))


def answer_times(path: Path) -> list[float]:
    """When each answered image of a camera's latency file was answered (Unix seconds)."""
    return [image.received_s for image in latency_file.read(path) if image.received_s is not None]


@pytest.fixture(scope="module")
def recoveries():
    """Each fault's longest stall in answers, kept in test-artifacts/faults.json for the README's table."""
    measured: dict[str, dict] = {}
    yield measured
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(measured, indent=2))


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_image_is_stored_exactly_once_when_the_supervisor_restarts_a_killed(
    component: str, stack: Config, images, recoveries: dict, tmp_path: Path
) -> None:
    test_stack = Stack(stack)
    killed = getattr(test_stack, component)
    restarts_before = restarts_in_status(test_stack, killed.name)
    producer_id = unique_producer_id(component)
    latencies = tmp_path / "latency.tsv"
    producer = Producer(
        stack, images, producer_id=producer_id, count=IMAGES, rate=RATE, latency_file=latencies, timeout_s=180
    )
    sending = threading.Thread(target=lambda: setattr(sending, "report", producer.run()))
    sending.start()
    time.sleep(FAULT_AFTER_S)
    killed.process.kill()
    sending.join()

    report = sending.report
    assert (report.sent, report.lost) == (IMAGES, 0), f"{report.lost} images unanswered after {killed.name} was killed"
    documents = wait_for_documents(stack, producer_id, expected=IMAGES)
    ids = [document["_id"] for document in documents]
    assert len(ids) == len(set(ids)) == IMAGES
    restarts = restarts_in_status(test_stack, killed.name) - restarts_before
    assert restarts >= 1, f"{killed.name} is running again, but the supervisor did not count a restart"
    answers = longest_gap_s(answer_times(latencies))
    storage = longest_gap_s([parse_time(document["stored_at"]) for document in documents])
    recoveries[f"{killed.name} killed"] = {
        "sent": IMAGES,
        "stored_once": len(ids),
        "lost": report.lost,
        "restarts_in_status": restarts,
        "longest_stall_in_answers_s": round(answers, 1),
        "longest_stall_in_storage_s": round(storage, 1),
    }
    print(
        f"\n{killed.name} killed: {IMAGES} sent, {len(ids)} stored once each; {restarts} restart(s); "
        f"stalls {answers:.1f} s / {storage:.1f} s"
    )
