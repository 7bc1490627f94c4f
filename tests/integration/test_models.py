"""Model versions through TorchServe's management API, while images flow."""

from __future__ import annotations

import functools
import threading
import time

import pytest
import torch

from bridges import Bridge, OpenInferenceClient, TorchServeClient, Undecodable
from bridges.bridge import in_canary
from handlers.images import preprocess_bytes
from handlers.resnet import CLASSES, load_checkpoint
from iotpipe import couch
from iotpipe.config import Config
from iotpipe.torchserve import ManagementClient, ManagementError
from iotpipe.wire import ImageEvent
from model_archives import arch_of_version, checkpoint_path, model_version, register_version
from producer import Producer
from stack import Stack
from tests.integration.helpers import unique_producer_id, wait_for_documents

DEFAULT = model_version("resnet20")
CANARY = model_version("resnet56")


@pytest.fixture(scope="module")
def canary(stack: Config):
    """The resnet56 version registered beside the default resnet20 one for this module, retired afterwards."""
    management = ManagementClient(stack)
    register_version(stack, stack.model_name, CANARY)
    yield CANARY
    management.set_default(stack.model_name, DEFAULT)
    management.unregister(stack.model_name, CANARY)


@functools.cache
def checkpoint_model(config: Config, version: str) -> torch.nn.Module:
    return load_checkpoint(checkpoint_path(config, arch_of_version(version)))


def offline_label(config: Config, version: str, data: bytes) -> str:
    with torch.inference_mode():
        return CLASSES[int(checkpoint_model(config, version)(preprocess_bytes(data)[None]).argmax())]


def test_both_inference_protocols_give_the_same_answers(stack: Config, images) -> None:
    events = [ImageEvent(source="protocols", data=image.read()) for image in images[::500]]
    events.append(ImageEvent(source="protocols", data=b"not an image"))
    answers = {}
    for client_class in (TorchServeClient, OpenInferenceClient):
        client = client_class(stack.replace(images_per_request=4))
        answers[client_class.protocol] = client.predict(events)
        client.close()
    native, open_inference = answers.values()
    assert native[:-1] == open_inference[:-1]
    assert isinstance(native[-1], Undecodable)
    assert native[-1] == open_inference[-1]
    assert native[0].model_version == open_inference[0].model_version == DEFAULT


def test_management_errors_say_what_to_do(stack: Config, canary: str) -> None:
    management = ManagementClient(stack)
    with pytest.raises(ManagementError, match="does not exist"):
        management.set_default(stack.model_name, "99.9")
    with pytest.raises(ManagementError, match="make another version the default first"):
        management.unregister(stack.model_name, DEFAULT)
    with pytest.raises(ManagementError, match="not answering"):
        ManagementClient(stack.replace(management_url="http://127.0.0.1:1")).models()


def test_switching_the_default_version_while_sending_loses_nothing(stack: Config, images, canary: str) -> None:
    producer_id = unique_producer_id("switch")
    chosen = images[::10]  # 1,000 images, 100 per class
    producer = Producer(stack, chosen, producer_id=producer_id, count=len(chosen), rate=100, timeout_s=120)
    sending = threading.Thread(target=lambda: setattr(sending, "report", producer.run()))
    sending.start()
    time.sleep(4)
    management = ManagementClient(stack)
    management.set_default(stack.model_name, canary)
    sending.join()
    management.set_default(stack.model_name, DEFAULT)
    assert (sending.report.sent, sending.report.lost) == (len(chosen), 0)

    documents = wait_for_documents(stack, producer_id, expected=len(chosen))
    assert len(documents) == len({d["subject"] for d in documents}) == len(chosen)
    by_version: dict[str, list[dict]] = {}
    for document in documents:
        by_version.setdefault(document["model_version"], []).append(document)
    assert set(by_version) == {DEFAULT, canary}, "the switch happened mid-stream"
    assert max(d["inferred_at"] for d in by_version[DEFAULT]) <= min(d["inferred_at"] for d in by_version[canary])

    files = {image.name: image for image in chosen}
    db = couch.database(stack)
    stored_accuracy = couch.accuracy_by_version(db, producer_id=producer_id)
    for version, stored in by_version.items():
        offline = [offline_label(stack, version, files[d["subject"]].read()) for d in stored]
        assert [d["label"] for d in stored] == offline, f"version {version} labels differ from its checkpoint"
        correct = sum(o == files[d["subject"]].label for o, d in zip(offline, stored, strict=True))
        assert stored_accuracy[version] == (len(stored), correct)


def test_a_canary_gets_its_share_of_the_images(stack: Config, images, canary: str) -> None:
    share = 0.3
    running_stack = Stack(stack)
    running_stack.bridge.process.stop()
    bridge = Bridge(stack.replace(canary_version=canary, canary_share=share, bridge_metrics_port=0))
    running = threading.Thread(target=bridge.run)
    running.start()
    try:
        producer_id = unique_producer_id("canary")
        report = Producer(stack, images[1::50], producer_id=producer_id, count=200, rate=100, timeout_s=60).run()
        assert report.lost == 0
    finally:
        bridge.stopping.set()
        running.join(timeout=30)
        running_stack.start("bridge")
    documents = wait_for_documents(stack, producer_id, expected=200)
    expected = {d["_id"] for d in documents if in_canary(d["_id"], share)}
    assert {d["_id"] for d in documents if d["model_version"] == canary} == expected
    assert 0.18 < len(expected) / len(documents) < 0.42  # 200 images: more than 3.5 standard deviations
