"""Crashes during a run of 2,000 images: the supervisor restarts the component, nothing is lost.

A few seconds into each run, while images flow at 100 per second, one component of the stack
(the Kafka broker, the CouchDB server, the model server, the bridge or the consumer) is killed with
SIGKILL, its whole process group at once, and nobody restarts it by hand: the supervisor that
`iotpipe up` started must bring it back. Every image must end up stored exactly once, with the label
its checkpoint gives it offline, on TorchServe and, for the model server's own crash, on MLServer. The longest
stalls in the producer's answers and in CouchDB's stored_at times, and the restarts that
`iotpipe status` shows, are kept in test-artifacts/faults.json.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from handlers.images import preprocess_bytes
from handlers.resnet import CLASSES
from iotpipe import latency_file
from iotpipe.config import Config
from iotpipe.wire import parse_time
from producer import Producer
from producer.images import SourceImage
from stack import Stack
from tests.conftest import MODEL_SERVERS, on_model_servers
from tests.integration.helpers import unique_producer_id, wait_for_documents
from tests.integration.test_models import checkpoint_model

IMAGES = 2000
RATE = 100
FAULT_AFTER_S = 5
COMPONENTS = ("kafka", "couchdb", "model_server", "bridge", "consumer")  # attributes of Stack
# Every fault on TorchServe; on each other server the one that exercises the model server's own behaviour. A Kafka,
# CouchDB, bridge or consumer crash takes the same paths whichever server answers (all five passed on MLServer when
# this was written), and running all five on both servers added about 3 minutes to `make test`. The model server's
# crash comes last, once per server, so that the stack switches servers once.
FAULTS = [("torchserve", component) for component in COMPONENTS if component != "model_server"] + [
    (server, "model_server") for server in MODEL_SERVERS
]
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults.json"


def restarts_in_status(stack: Stack, name: str) -> int:
    return next(row.restarts for row in stack.status() if row.name == name)


def longest_gap_s(times: list[float]) -> float:
    return max(later - earlier for earlier, later in itertools.pairwise(sorted(times)))


def answer_times(path: Path) -> list[float]:
    """When each answered image of a camera's latency file was answered (Unix seconds)."""
    return [image.received_s for image in latency_file.read(path) if image.received_s is not None]


def labels_unlike_offline(config: Config, documents: list[dict], images) -> dict[str, tuple[str, str]]:
    """{subject: (stored label, offline label)} of each document whose label is not the one its version's
    checkpoint gives the same file in-process."""
    files = {image.name: image for image in images}
    by_version: dict[str, set[SourceImage]] = {}
    for document in documents:
        by_version.setdefault(document["model_version"], set()).add(files[document["subject"]])
    offline = {
        (version, name): label
        for version, sent in by_version.items()
        for name, label in offline_labels(config, version, tuple(sorted(sent, key=lambda image: image.name))).items()
    }
    return {
        d["subject"]: (d["label"], expected)
        for d in documents
        if d["label"] != (expected := offline[d["model_version"], d["subject"]])
    }


@functools.cache
def offline_labels(config: Config, version: str, images: tuple[SourceImage, ...]) -> dict[str, str]:
    """{name: label} that ``version``'s checkpoint gives each image in-process, in one forward pass; cached, as
    every run of this module sends the same images."""
    batch = torch.stack([preprocess_bytes(image.read()) for image in images])
    with torch.inference_mode():
        rows = checkpoint_model(config, version)(batch).argmax(dim=1)
    return {image.name: CLASSES[int(row)] for image, row in zip(images, rows, strict=True)}


@pytest.fixture(scope="module")
def recoveries():
    """Each fault's longest stall in answers, kept in test-artifacts/faults.json for the README's table."""
    measured: dict[str, dict] = {}
    yield measured
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(measured, indent=2))


@on_model_servers(FAULTS, "stack,component")
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
    assert labels_unlike_offline(stack, documents, images) == {}, f"{stack.model_server}'s labels are not offline's"
    restarts = restarts_in_status(test_stack, killed.name) - restarts_before
    assert restarts >= 1, f"{killed.name} is running again, but the supervisor did not count a restart"
    answers = longest_gap_s(answer_times(latencies))
    storage = longest_gap_s([parse_time(document["stored_at"]) for document in documents])
    recoveries[f"{killed.name} killed ({stack.model_server})"] = {
        "sent": IMAGES,
        "stored_once": len(ids),
        "lost": report.lost,
        "restarts_in_status": restarts,
        "longest_stall_in_answers_s": round(answers, 1),
        "longest_stall_in_storage_s": round(storage, 1),
    }
    print(
        f"\n{killed.name} killed on {stack.model_server}: {IMAGES} sent, {len(ids)} stored once each; "
        f"{restarts} restart(s); stalls {answers:.1f} s / {storage:.1f} s"
    )
