"""A burst of images through the whole pipeline before `iotpipe up` says the stack is up.

Each service warms its own connections before it reports ready (iotpipe.processing), but some first-use costs lie
only on the path that real records take: the broker's first produce and fetch of records, the bridge's first fetch,
decode, inference and publish of a camera's image, the model server's first images of that kind. And the JVMs of
Kafka and TorchServe compile their hot paths only after thousands of records: with 40 warm-up images the first 30 s
of 5 cameras x 20 images/s after `up` had twice the p99 of the 30 s after them, and Kafka spent 4.4-4.9 CPU-ms per
image in them against 1.8-2.1 a minute later (README, Load test and performance). So `up` sends
``config.warmup_images`` images from ``CAMERAS`` cameras at a camera's rate and waits for every answer. Their
results are stored like any other, under the same ids at every `up` (a redelivered image stays one document); they
carry no ground truth, so no accuracy counts them.
"""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import Image

from iotpipe.config import Config
from producer import Camera, Fleet, SourceImage
from stack.process import StackError

CAMERA = "iotpipe-warmup"  # the cameras are CAMERA-0 to CAMERA-(CAMERAS - 1)
CAMERAS = 10
RATE = 20.0  # images/s per camera: small batches, as cameras send them
TIMEOUT_S = 60.0


def warm_up_pipeline(config: Config) -> None:
    """Send the warm-up images through the pipeline and wait for their answers; StackError if any is lost."""
    cameras = warm_up_cameras(config.warmup_images)
    if not cameras:
        return
    reports = Fleet(config, cameras, TIMEOUT_S).run()
    lost, sent = sum(report.lost for report in reports), sum(report.sent for report in reports)
    if lost:
        raise StackError(
            f"{lost} of {sent} warm-up images were not answered within {TIMEOUT_S:g} s; "
            f"see the bridge's and the model server's logs in {config.logs_dir}"
        )


def warm_up_cameras(images: int) -> list[Camera]:
    """``images`` spread over up to ``CAMERAS`` cameras, each image with the same id at every `up`."""
    image = warm_up_image()
    cameras = []
    for number in range(min(CAMERAS, images)):
        camera = f"{CAMERA}-{number}"
        share = range(number, images, CAMERAS)
        cameras.append(Camera(camera, [replace(image, event_id=f"{camera}-{n}") for n in share], RATE))
    return cameras


def warm_up_image() -> SourceImage:
    """A 32x32 JPEG, the kind of image the cameras send."""
    encoded = io.BytesIO()
    Image.new("RGB", (32, 32), (96, 128, 160)).save(encoded, format="JPEG")
    return SourceImage("warm-up.jpg", None, "image/jpeg", encoded=encoded.getvalue())
