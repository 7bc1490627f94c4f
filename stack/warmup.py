"""A burst of images through the whole pipeline before `iotpipe up` says the stack is up.

Each service warms its own connections before it reports ready (iotpipe.processing), but some first-use costs lie
only on the path that real records take: the broker's first produce and fetch of records, the bridge's first fetch,
decode, inference and publish of a camera's image, the model server's first images of that kind. Without this, the
first images after `iotpipe up` paid them (a lone camera's first image 103-153 ms against a median of 26-36 ms, most
of it in the produce to and the fetch from the broker; with it 34-45 ms against 26-34 ms). So `up` sends ``IMAGES``
images as camera ``CAMERA``, a few at a time as cameras do, and waits for every answer. Their results are stored
like any other, under the same ids at every `up` (a redelivered image stays one document: ``IMAGES`` documents in
all); they carry no ground truth, so no accuracy counts them.
"""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import Image

from iotpipe.config import Config
from producer import Camera, Fleet, SourceImage
from stack.process import StackError

CAMERA = "iotpipe-warmup"
IMAGES = 40
RATE = 20.0  # images/s: small batches, as the cameras send them
TIMEOUT_S = 60.0


def warm_up_pipeline(config: Config) -> None:
    """Send ``IMAGES`` images through the pipeline and wait for their answers; StackError if any is lost."""
    images = [replace(warm_up_image(), event_id=f"{CAMERA}-{number}") for number in range(IMAGES)]
    [report] = Fleet(config, [Camera(CAMERA, images, RATE)], TIMEOUT_S).run()
    if report.lost:
        raise StackError(
            f"{report.lost} of {report.sent} warm-up images were not answered within {TIMEOUT_S:g} s; "
            f"see the bridge's and the model server's logs in {config.logs_dir}"
        )


def warm_up_image() -> SourceImage:
    """A 32x32 JPEG, the kind of image the cameras send."""
    encoded = io.BytesIO()
    Image.new("RGB", (32, 32), (96, 128, 160)).save(encoded, format="JPEG")
    return SourceImage("warm-up.jpg", None, "image/jpeg", encoded=encoded.getvalue())
