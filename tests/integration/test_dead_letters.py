"""`iotpipe dlq` on the real test stack: list a dead letter by reason, replay it, refuse it past the limit."""

from __future__ import annotations

import json
import time

import pytest

from app.commands import main
from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.dead_letters import MAX_REPLAYS, DeadLetter, read_dead_letters, select
from iotpipe.wire import ImageEvent, now_iso
from tests.integration.helpers import unique_producer_id

CAMERA_HEADER = ("x-camera-firmware", b"4.2")
NOT_AN_IMAGE = "not a JPEG or PNG"


def send_text_as_image(config: Config) -> ImageEvent:
    """A well-formed CloudEvent whose image is text, with a camera's own header beside the CloudEvents ones."""
    event = ImageEvent(source=unique_producer_id("dlq-replay"), data=b"hello, I am text, not an image")
    key, value, headers = event.to_record()
    sender = kafka_clients.producer(config)
    try:
        sender.send(config.images_topic, key=key, value=value, headers=[*headers, CAMERA_HEADER]).get(timeout=30)
    finally:
        sender.close()
    return event


def wait_for_dead_letter(config: Config, image_id: str, replays: int, timeout_s: float = 60) -> DeadLetter:
    """The latest dead letter of ``image_id`` once it is the one with ``replays`` replays."""
    deadline = time.monotonic() + timeout_s
    while True:
        latest = select(read_dead_letters(config, [config.dead_letter_topic]), ids=[image_id])
        if latest and latest[0].replays == replays:
            return latest[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no dead letter of {image_id} replayed {replays} times within {timeout_s} s; latest: {latest}")
        time.sleep(0.5)


def dlq(capsys: pytest.CaptureFixture[str], stack: Config, *arguments: str) -> tuple[int, str]:
    """Run ``iotpipe dlq ARGUMENTS`` with the test stack's IOTPIPE_* variables."""
    code = main(["dlq", *arguments], environ=stack.environ())
    return code, capsys.readouterr().out


def test_a_bad_image_is_listed_by_reason_replayed_with_its_headers_and_refused_past_the_limit(
    stack: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    started = now_iso()
    event = send_text_as_image(stack)
    first = wait_for_dead_letter(stack, event.id, replays=0)
    assert NOT_AN_IMAGE in first.reason
    assert first.origin_topic == stack.images_topic
    assert CAMERA_HEADER in first.headers

    code, out = dlq(capsys, stack, "list", "--since", started, "--json")
    assert code == 0
    listed = {group["reason"]: group for group in json.loads(out)["reasons"]}
    assert event.id in listed[first.reason]["examples"]

    for replays in range(1, MAX_REPLAYS + 1):
        code, out = dlq(capsys, stack, "replay", "--id", event.id)
        assert (code, out.splitlines()[0]) == (0, "replayed 1 of 1 selected dead letters"), out
        again = wait_for_dead_letter(stack, event.id, replays=replays)
        assert NOT_AN_IMAGE in again.reason
        assert (again.key, again.value, again.origin_topic) == (first.key, first.value, stack.images_topic)
        assert CAMERA_HEADER in again.headers

    code, out = dlq(capsys, stack, "replay", "--id", event.id)
    assert code == 2, out
    assert f"replayed {MAX_REPLAYS} times already and failed each time" in out
    assert out.splitlines()[0] == "replayed 0 of 1 selected dead letters"
