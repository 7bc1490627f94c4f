"""The TorchServe handler in-process: TorchServe's request shape in, one answer per request out."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from handlers.cifar10 import Cifar10Classifier
from handlers.images import BadImage, decode, preprocess_bytes
from handlers.resnet import CLASSES, load_checkpoint
from iotpipe.config import Config
from stack.models import checkpoint_path

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


@pytest.mark.parametrize(("data", "reason"), [(b"", "empty"), (b"GIF89a....", "not a JPEG or PNG")])
def test_decode_refuses_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadImage, match=reason):
        decode(data)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("1", (5000, 5000)).save(big)  # tiny file, 25 megapixels
    with pytest.raises(BadImage, match="over the limit"):
        decode(big.read_bytes())


def test_images_of_other_sizes_are_resized_to_32x32() -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, format="PNG")
    assert preprocess_bytes(buffer.getvalue()).shape == (3, 32, 32)
