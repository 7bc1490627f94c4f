"""The warm-up: images that the cameras could send and the bridge accepts, the same ids at every `up`."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from iotpipe.wire import ImageEvent, max_image_bytes
from stack.warmup import CAMERA, CAMERAS, warm_up_cameras, warm_up_image


def test_the_warm_up_image_is_a_small_jpeg_that_passes_the_wire_format() -> None:
    image = warm_up_image()
    event = ImageEvent(CAMERA, image.read(), image.content_type, subject=image.name)

    decoded = ImageEvent.from_record(*event.to_record()[1:], max_bytes=max_image_bytes(1_048_576))

    assert decoded.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(decoded.data)).size == (32, 32)


@pytest.mark.parametrize("images", [1, 7, CAMERAS, 3001])
def test_the_warm_up_images_are_spread_over_cameras_with_ids_that_never_change(images: int) -> None:
    cameras = warm_up_cameras(images)

    ids = [image.event_id for camera in cameras for image in camera.images]
    assert len(cameras) == min(images, CAMERAS)
    assert len(set(ids)) == len(ids) == images
    assert ids == [image.event_id for camera in warm_up_cameras(images) for image in camera.images]
    assert all(image.event_id.startswith(camera.producer_id + "-") for camera in cameras for image in camera.images)
    assert max(len(camera.images) for camera in cameras) - min(len(camera.images) for camera in cameras) <= 1


def test_no_warm_up_images_no_cameras() -> None:
    assert warm_up_cameras(0) == []
