import base64
import hashlib
from dataclasses import fields

from iotpipe.couch import DOCUMENT_FIELDS, document_for
from iotpipe.wire import Prediction
from tests.unit.test_wire import make_prediction


def test_document_id_is_the_image_id_and_the_image_is_attached() -> None:
    prediction = make_prediction()
    document = document_for(prediction, stored_at="2026-01-01T00:00:01Z")
    assert document["_id"] == "abc"
    attachment = document["_attachments"]["image"]
    assert attachment["content_type"] == "image/jpeg"
    assert base64.b64decode(attachment["data"]) == prediction.image


def test_document_has_every_field_of_the_result() -> None:
    document = document_for(make_prediction(), stored_at="2026-01-01T00:00:01Z")
    expected = {
        "producer_id": "camera-1",
        "ground_truth": "cat",
        "label": "dog",
        "scores": {"dog": 0.6, "cat": 0.3, "frog": 0.1},
        "model": "cifar10-resnet",
        "model_version": "20.1",
        "sent_at": "2026-01-01T00:00:00.000000Z",
        "inferred_at": "2026-01-01T00:00:00.020000Z",
        "stored_at": "2026-01-01T00:00:01Z",
    }
    assert {name: document[name] for name in expected} == expected


def test_document_keeps_the_digest_of_its_image_so_that_a_redelivery_can_be_told_from_another_image() -> None:
    document = document_for(make_prediction(image=b"\xff\xd8one"))
    assert document["image_digest"] == "sha256:" + hashlib.sha256(b"\xff\xd8one").hexdigest()
    assert document_for(make_prediction(image=b"\xff\xd8two"))["image_digest"] != document["image_digest"]


def test_every_field_of_a_prediction_is_stored_and_the_document_has_the_fields_readers_ask_for() -> None:
    prediction = make_prediction()
    document = document_for(prediction, stored_at="2026-01-01T00:00:01Z")
    attachment = document["_attachments"]["image"]
    stored = {name: value for name, value in document.items() if not name.startswith("_")} | {
        "id": document["_id"],
        "content_type": attachment["content_type"],
        "image": base64.b64decode(attachment["data"]),
    }
    assert {field.name: getattr(prediction, field.name) for field in fields(Prediction)}.items() <= stored.items()
    assert [name for name in document if name != "_attachments"] == DOCUMENT_FIELDS
