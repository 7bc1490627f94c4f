"""The MLServer runtime in-process: the same answers, labels and reasons as the TorchServe handler."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest

from handlers.images import SIDE
from model_archives import model_version
from servers.mlserver.repository import model_settings
from servers.mlserver.runtime import Cifar10Runtime
from tests.unit import test_handler
from tests.unit.test_handler import CONFIG, classify, png

handler = test_handler.handler  # the TorchServe handler's fixture: the answers to match


@pytest.fixture(scope="module")
def runtime() -> Cifar10Runtime:
    settings = model_settings(CONFIG, "resnet20")
    model = Cifar10Runtime(
        ModelSettings(
            name=settings["name"],
            implementation=Cifar10Runtime,
            parameters=ModelParameters(**settings["parameters"]),
        )
    )
    asyncio.run(model.load())
    return model


def request(*items: str) -> dict:
    """An Open Inference request as the bridge sends it (MLServer requires the shape)."""
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(items)], "data": list(items)}
    return {"id": "req-1", "inputs": [tensor]}


def infer(runtime: Cifar10Runtime, body: dict) -> dict:
    return asyncio.run(runtime.predict(InferenceRequest.model_validate(body))).model_dump(exclude_none=True)


def outputs(answer: dict) -> dict[str, list]:
    return {output["name"]: output["data"] for output in answer["outputs"]}


def test_good_and_bad_images_get_the_handlers_labels_scores_and_reasons_in_their_places(runtime, handler) -> None:
    jpegs = [path.read_bytes() for path in sorted(CONFIG.data_dir.glob("*/*.jpg"))[::1000]]
    items = [base64.b64encode(data).decode() for data in jpegs]
    items[1:1] = [base64.b64encode(b"text, not an image").decode(), "not base64 !", base64.b64encode(b"").decode()]
    items.append(base64.b64encode(png(SIDE, SIDE)[:40]).decode())
    body = request(*items)
    [expected] = classify(handler, [{"body": body}])

    answer = infer(runtime, body)
    assert outputs(answer) == outputs(expected)
    assert (answer["model_name"], answer["model_version"]) == (CONFIG.model_name, model_version("resnet20"))
    assert [json.loads(scores) != {} for scores in outputs(answer)["scores"]].count(False) == 4


def test_a_request_of_only_bad_images_is_answered_without_a_forward_pass(runtime) -> None:
    answer = infer(runtime, request(base64.b64encode(b"GIF89a").decode()))
    assert outputs(answer) == {"label": [""], "scores": ["{}"], "error": ["not a JPEG or PNG image"]}
