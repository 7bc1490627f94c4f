"""The warm-up image is one that the cameras could send and the bridge accepts."""

from __future__ import annotations

import io

from PIL import Image

from iotpipe.wire import ImageEvent, max_image_bytes
from stack.warmup import CAMERA, warm_up_image


def test_the_warm_up_image_is_a_small_jpeg_that_passes_the_wire_format() -> None:
    image = warm_up_image()
    event = ImageEvent(CAMERA, image.read(), image.content_type, subject=image.name)

    decoded = ImageEvent.from_record(*event.to_record()[1:], max_bytes=max_image_bytes(1_048_576))

    assert decoded.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(decoded.data)).size == (32, 32)
