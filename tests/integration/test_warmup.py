"""`iotpipe up` warms the whole pipeline: the images a camera sends first meet no cold path."""

from __future__ import annotations

import pytest

from iotpipe.config import Config
from stack import warmup
from tests.integration.helpers import wait_for_documents

pytestmark = pytest.mark.integration


def test_up_returns_only_after_its_warm_up_images_went_through_the_whole_pipeline(stack: Config) -> None:
    for camera in warmup.warm_up_cameras(stack.warmup_images):
        stored = wait_for_documents(stack, camera.producer_id, expected=len(camera.images))

        # every `up` (the session's, each switch of model server) sends the same ids: one document each
        assert sorted(document["_id"] for document in stored) == sorted(image.event_id for image in camera.images)
        assert all(document["label"] and document.get("ground_truth") is None for document in stored)
