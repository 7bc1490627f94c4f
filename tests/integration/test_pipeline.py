"""End to end on the real services: Kafka broker, TorchServe, CouchDB API server."""

from __future__ import annotations

import torch

from handlers.images import preprocess_bytes
from handlers.resnet import CLASSES, load_checkpoint
from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.wire import ImageEvent
from model_archives import checkpoint_path, model_version
from producer import Producer
from tests.integration.helpers import dead_letters, unique_producer_id, wait_for_documents

PER_CLASS = 50  # 500 images


def offline_labels(config: Config, images) -> dict[str, str]:
    """The label the same checkpoint gives each file in-process, with the handler's preprocessing."""
    model = load_checkpoint(checkpoint_path(config, config.model_arch))
    batch = torch.stack([preprocess_bytes(image.read()) for image in images])
    with torch.inference_mode():
        indices = model(batch).argmax(dim=1).tolist()
    return {image.name: CLASSES[i] for image, i in zip(images, indices, strict=True)}


def test_every_image_is_stored_once_with_the_offline_label(stack: Config, images) -> None:
    chosen = [image for label in CLASSES for image in [i for i in images if i.label == label][:PER_CLASS]]
    producer_id = unique_producer_id("e2e")
    report = Producer(stack, chosen, producer_id=producer_id, count=len(chosen), rate=100, timeout_s=120).run()
    assert (report.sent, report.lost) == (len(chosen), 0)

    documents = wait_for_documents(stack, producer_id, expected=len(chosen))
    by_file = {}
    for document in documents:
        by_file.setdefault(document["subject"], []).append(document)
    assert sorted(by_file) == sorted(image.name for image in chosen)
    assert all(len(stored) == 1 for stored in by_file.values()), "an image was stored more than once"

    expected = offline_labels(stack, chosen)
    disagreements = {
        name: (stored[0]["label"], expected[name])
        for name, stored in by_file.items()
        if stored[0]["label"] != expected[name]
    }
    assert disagreements == {}, f"pipeline label != offline label for {disagreements}"

    accuracy = sum(document["label"] == document["ground_truth"] for document in documents) / len(documents)
    print(f"\naccuracy of {stack.model_arch} on {len(documents)} images through the pipeline: {accuracy:.2%}")
    for document in documents:
        assert document["model"] == stack.model_name
        assert document["model_version"] == model_version(stack.model_arch)
        assert document["_attachments"]["image"]["content_type"] == "image/jpeg"
        assert document["sent_at"] <= document["inferred_at"] <= document["stored_at"]


def test_bad_messages_go_to_the_dead_letter_topic_and_good_ones_around_them_are_stored(stack: Config, images) -> None:
    producer_id = unique_producer_id("dlq")
    jpeg = images[0].read()
    good = [ImageEvent(source=producer_id, data=image.read(), subject=image.name) for image in images[:6]]
    bad = {
        "not an image": ImageEvent(source=producer_id, data=b"hello, I am text"),
        "truncated": ImageEvent(source=producer_id, data=jpeg[: len(jpeg) // 3]),
        "empty": ImageEvent(source=producer_id, data=b""),
        "wrong content type": ImageEvent(source=producer_id, data=jpeg, content_type="text/plain"),
    }
    interleaved = [good[0], bad["not an image"], good[1], bad["truncated"], good[2], bad["empty"], good[3]]
    interleaved += [bad["wrong content type"], good[4], good[5]]
    sender = kafka_clients.producer(stack)
    for event in interleaved:
        key, value, headers = event.to_record()
        sender.send(stack.images_topic, key=key, value=value, headers=headers)
    missing_headers = ImageEvent(source=producer_id, data=jpeg)
    key, value, headers = missing_headers.to_record()
    sender.send(stack.images_topic, key=key, value=value, headers=[h for h in headers if h[0] != "ce_source"])
    sender.flush()
    sender.close()

    reasons = dead_letters(stack, stack.dead_letter_topic, {event.id for event in bad.values()} | {missing_headers.id})
    assert "not a JPEG or PNG" in reasons[bad["not an image"].id]
    assert "truncated" in reasons[bad["truncated"].id] or "corrupt" in reasons[bad["truncated"].id]
    assert "empty" in reasons[bad["empty"].id]
    assert "text/plain" in reasons[bad["wrong content type"].id]
    assert "ce_source" in reasons[missing_headers.id]

    documents = wait_for_documents(stack, producer_id, expected=len(good))
    assert sorted(document["_id"] for document in documents) == sorted(event.id for event in good)
