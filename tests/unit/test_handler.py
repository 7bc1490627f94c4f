"""The TorchServe handler in-process: TorchServe's request shape in, one answer per request out."""

import base64
import io
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, PngImagePlugin

from handlers import images
from handlers.cifar10 import Cifar10Classifier
from handlers.images import MAX_REASON_CHARS, MAX_SIDE, SIDE, BadImage, decode, preprocess_bytes
from handlers.resnet import CLASSES, load_checkpoint
from iotpipe.config import Config
from iotpipe.image_types import PILLOW_FORMATS
from model_archives import checkpoint_path

CONFIG = Config.load()


@pytest.fixture(scope="module")
def handler() -> Cifar10Classifier:
    checkpoint = checkpoint_path(CONFIG, "resnet20")
    context = SimpleNamespace(
        manifest={"model": {"modelName": "cifar10-resnet", "modelVersion": "20.1", "serializedFile": checkpoint.name}},
        system_properties={"model_dir": str(checkpoint.parent)},
    )
    classifier = Cifar10Classifier()
    classifier.initialize(context)
    return classifier


@pytest.fixture(scope="module")
def cat_jpeg() -> bytes:
    return next((CONFIG.data_dir / "cat").glob("*.jpg")).read_bytes()


def classify(handler: Cifar10Classifier, data: list[dict]) -> list[list[dict]]:
    return handler.postprocess(handler.inference(handler.preprocess(data)))


def test_each_request_gets_one_prediction_per_image_in_order(handler, cat_jpeg) -> None:
    answers = classify(handler, [{"body": cat_jpeg}, {"image0": cat_jpeg, "image1": cat_jpeg}])
    assert [len(answer) for answer in answers] == [1, 2]
    prediction = answers[0][0]
    assert prediction["label"] in CLASSES
    assert prediction["model"] == "cifar10-resnet" and prediction["model_version"] == "20.1"
    assert len(prediction["scores"]) == 3 and next(iter(prediction["scores"])) == prediction["label"]


def test_bad_image_gets_an_error_and_its_neighbours_are_still_answered(handler, cat_jpeg) -> None:
    answers = classify(handler, [{"image0": b"not an image", "image1": cat_jpeg, "image2": cat_jpeg[:200]}])
    bad, good, truncated = answers[0]
    assert "not a JPEG or PNG" in bad["error"]
    assert good["label"] in CLASSES
    assert "truncated" in truncated["error"] or "corrupt" in truncated["error"]


def test_label_is_the_offline_label_of_the_same_checkpoint(handler, cat_jpeg) -> None:
    model = load_checkpoint(checkpoint_path(CONFIG, "resnet20"))
    with torch.inference_mode():
        offline = CLASSES[int(model(preprocess_bytes(cat_jpeg)[None]).argmax())]
    assert classify(handler, [{"body": cat_jpeg}])[0][0]["label"] == offline


def test_the_handler_decodes_exactly_the_image_types_the_wire_format_accepts() -> None:
    assert images.ACCEPTED_FORMATS == PILLOW_FORMATS, "handlers/images.py's copy of iotpipe.image_types differs"


@pytest.mark.parametrize(("data", "reason"), [(b"", "empty"), (b"GIF89a....", "not a JPEG or PNG")])
def test_decode_refuses_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadImage, match=reason):
        decode(data)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("1", (5000, 5000)).save(big)  # tiny file, 25 megapixels
    with pytest.raises(BadImage, match="over the limit"):
        decode(big.read_bytes())


def test_images_of_other_sizes_are_resized_to_32x32() -> None:
    assert preprocess_bytes(png(64, 48)).shape == (3, 32, 32)


def png(width: int, height: int, pnginfo: PngImagePlugin.PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def text_bomb_png() -> bytes:
    """A 1 kB PNG whose compressed text chunk inflates past Pillow's limit: Pillow raises ValueError."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    return png(SIDE, SIDE, info)


def test_the_pixel_limit_is_a_multiple_of_the_models_side_checked_per_side() -> None:
    assert MAX_SIDE == 32 * SIDE
    assert preprocess_bytes(png(MAX_SIDE, 1)).shape == (3, SIDE, SIDE)
    for width, height in ((MAX_SIDE + 1, 1), (1, MAX_SIDE + 1)):
        with pytest.raises(BadImage, match="over the limit"):
            decode(png(width, height))


def test_a_png_whose_text_inflates_past_pillows_limit_is_that_images_bad_image() -> None:
    with pytest.raises(BadImage, match="corrupt or truncated image: ValueError"):
        decode(text_bomb_png())


@pytest.mark.parametrize(
    "error", [ValueError("x"), SyntaxError("x"), struct.error("x"), EOFError(), zlib.error("x"), MemoryError()]
)
def test_any_exception_from_pillow_is_that_images_bad_image(monkeypatch, error: Exception) -> None:
    def failing_open(*args, **kwargs):
        raise error

    monkeypatch.setattr(images.Image, "open", failing_open)
    with pytest.raises(BadImage, match=f"corrupt or truncated image: {type(error).__name__}"):
        decode(png(SIDE, SIDE))


def test_a_bad_images_reason_is_bounded(monkeypatch) -> None:
    def failing_open(*args, **kwargs):
        raise ValueError("x" * 100_000)

    monkeypatch.setattr(images.Image, "open", failing_open)
    with pytest.raises(BadImage) as refused:
        decode(png(SIDE, SIDE))
    assert len(str(refused.value)) <= MAX_REASON_CHARS


def open_inference(*items: object, **body: object) -> dict:
    return {"body": {"id": "req-1", "inputs": [{"name": "images", "datatype": "BYTES", "data": list(items)}]} | body}


def outcomes(answer: list[dict] | dict) -> str:
    """One letter per image of a request's answer (native or Open Inference): L labelled, E an error."""
    if isinstance(answer, dict):
        outputs = {output["name"]: output["data"] for output in answer["outputs"]}
        labels_and_errors = list(zip(outputs["label"], outputs["error"], strict=True))
    else:
        labels_and_errors = [(prediction.get("label", ""), prediction.get("error", "")) for prediction in answer]
    assert all(bool(label in CLASSES) != bool(error) for label, error in labels_and_errors)
    return "".join("E" if error else "L" for _, error in labels_and_errors)


def test_a_batch_mixing_good_images_with_every_kind_of_bad_one_answers_each_in_its_place(handler, cat_jpeg) -> None:
    good = base64.b64encode(cat_jpeg).decode()
    requests_and_outcomes = [
        ({"image0": cat_jpeg, "image1": b"not an image", "image2": cat_jpeg[:200], "image3": b""}, "LEEE"),
        ({"image0": text_bomb_png(), "image1": png(MAX_SIDE + 1, 1), "image2": cat_jpeg}, "EEL"),
        ({"body": "a text body"}, "E"),  # TorchServe hands a text/* body over as a str
        ({"body": {"not": "open inference"}}, "E"),  # and a JSON body as a dict
        ("not a dict", "E"),
        ({"body": cat_jpeg}, "L"),
        (open_inference(good, "@@not base64@@", 7, None), "LEEE"),
        ({"body": {"id": "req-2", "inputs": "not a list"}}, "E"),
        ({"body": {"id": ["not a string"], "inputs": [{"datatype": "FP32", "data": [good]}]}}, "E"),
        (open_inference(good), "L"),
    ]
    answers = classify(handler, [request for request, _ in requests_and_outcomes])
    assert [outcomes(answer) for answer in answers] == [expected for _, expected in requests_and_outcomes]
    assert [answer["id"] for answer in answers if isinstance(answer, dict)] == ["req-1", "req-2", "", "req-1"]
