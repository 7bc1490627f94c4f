"""The pipeline on MLServer (IOTPIPE_MODEL_SERVER=mlserver): the same labels and dead letters as on TorchServe.

The session's Kafka and CouchDB carry the images; the bridge talks to MLServer, which serves every
checkpoint as a version, pinned to resnet20 with half of the images routed to the resnet56 canary
through ``/v2/models/<model>/versions/<v>/infer``: the session's stack switched to MLServer (the
``stack`` fixture parametrized), its bridge replaced by one with the canary for this module.
"""

from __future__ import annotations

import re
import threading

import pytest

from bridges import Bridge, OpenInferenceClient
from bridges.bridge import in_canary
from handlers.images import BadImage, preprocess_bytes
from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.mlserver import served_versions
from iotpipe.processing import Outage
from iotpipe.wire import ImageEvent
from model_archives import model_version
from producer import Producer
from stack import Stack
from tests.conftest import on_model_servers
from tests.faults.test_faults import labels_unlike_offline
from tests.integration.helpers import dead_letters, unique_producer_id, wait_for_documents

PINNED = model_version("resnet20")
CANARY = model_version("resnet56")
SHARE = 0.5

pytestmark = on_model_servers(["mlserver"])


@pytest.fixture(scope="module")
def mlserver(stack: Config) -> Config:
    """The configuration of a bridge that talks to the stack's MLServer, pinned to resnet20 with a resnet56 canary."""
    return stack.replace(model_version=PINNED, canary_version=CANARY, canary_share=SHARE, bridge_metrics_port=0)


@pytest.fixture(scope="module")
def bridge(stack: Config, mlserver: Config):
    """The stack's bridge replaced by one that talks to MLServer, for this module."""
    stack_bridge = Stack(stack).bridge
    stack_bridge.process.stop()
    bridge = Bridge(mlserver)
    running = threading.Thread(target=bridge.run)
    running.start()
    try:
        yield bridge
    finally:
        bridge.stopping.set()
        running.join(timeout=30)
        stack_bridge.start()


def reason_of(data: bytes) -> str:
    """What handlers/ says of an image it cannot decode, on TorchServe as on MLServer."""
    with pytest.raises(BadImage) as refused:
        preprocess_bytes(data)
    return str(refused.value)


def test_mlserver_serves_every_checkpoint_as_a_version_of_one_model(mlserver: Config) -> None:
    versions = served_versions(mlserver)
    assert [(v.name, v.version, v.state) for v in versions] == [
        (mlserver.model_name, model_version(arch), "READY") for arch in ("resnet20", "resnet32", "resnet44", "resnet56")
    ]
    assert [v.version for v in versions if v.is_default] == [CANARY], "MLServer's default is its newest version"


def test_every_image_is_stored_once_with_its_versions_offline_label(stack: Config, mlserver: Config, bridge, images):
    chosen = images[3::50]  # 200 images
    producer_id = unique_producer_id("mlserver")
    report = Producer(stack, chosen, producer_id=producer_id, count=len(chosen), rate=100, timeout_s=120).run()
    assert (report.sent, report.lost) == (len(chosen), 0)

    documents = wait_for_documents(stack, producer_id, expected=len(chosen))
    assert len(documents) == len({d["subject"] for d in documents}) == len(chosen), "an image stored twice or lost"
    routed = {d["_id"]: CANARY if in_canary(d["_id"], SHARE) else PINNED for d in documents}
    assert {d["_id"]: d["model_version"] for d in documents} == routed, "an image answered by the wrong version"
    assert set(routed.values()) == {PINNED, CANARY}
    assert labels_unlike_offline(stack, documents, chosen) == {}, "MLServer's labels are not the checkpoint's offline"


def test_bad_images_are_dead_lettered_with_the_reasons_torchserve_gives(
    stack: Config, mlserver: Config, bridge, images
):
    producer_id = unique_producer_id("mlserver-dlq")
    jpeg = images[0].read()
    good = [ImageEvent(source=producer_id, data=image.read(), subject=image.name) for image in images[:4]]
    bad = [
        ImageEvent(source=producer_id, data=b"hello, I am text"),
        ImageEvent(source=producer_id, data=jpeg[: len(jpeg) // 3]),
    ]
    sender = kafka_clients.producer(stack)
    for event in [good[0], bad[0], good[1], bad[1], *good[2:]]:
        key, value, headers = event.to_record()
        sender.send(stack.images_topic, key=key, value=value, headers=headers)
    sender.flush()
    sender.close()

    reasons = dead_letters(stack, stack.dead_letter_topic, {event.id for event in bad})
    assert reasons == {event.id: reason_of(event.data) for event in bad}, "TorchServe's handler gives these reasons"
    documents = wait_for_documents(stack, producer_id, expected=len(good))
    assert sorted(d["_id"] for d in documents) == sorted(event.id for event in good)


def test_an_unknown_version_is_waited_for_with_a_message_naming_it(mlserver: Config) -> None:
    client = OpenInferenceClient(mlserver)
    try:
        with pytest.raises(Outage, match=re.escape("versions/99.9/infer has no such model or version")):
            client.predict([ImageEvent(source="probe", data=b"x")], "99.9")
    finally:
        client.close()
