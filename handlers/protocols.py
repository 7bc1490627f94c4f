"""The two request shapes the handler reads: TorchServe's native API and the Open Inference Protocol.

``request_images`` never raises: TorchServe's dynamic batching puts several clients' requests in
one batch, and an exception would fail all of them, so a malformed request (or a malformed image in
it) gets the reason in its place instead.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass
class RequestLayout:
    """Where a request's images went: each one's row in the batch, or the reason it has none."""

    slots: list[int | str] = field(default_factory=list)
    inference_id: str | None = None  # set for Open Inference Protocol requests


def request_images(request: object) -> tuple[list[bytes | str], RequestLayout]:
    """The images of one request and its layout; in an unusable image's place, a string: why."""
    if not isinstance(request, dict):
        return [f"a request is a {type(request).__name__}, expected TorchServe's dict of parts"], RequestLayout()
    body = request.get("body")
    if isinstance(body, dict) and "inputs" in body:
        return _open_inference_images(body)
    return [_native_image(part) for part in request.values()], RequestLayout()


def _native_image(part: object) -> bytes | str:
    if isinstance(part, bytes | bytearray):
        return bytes(part)
    return f"a request part is a {type(part).__name__}, expected the bytes of one image"


def _open_inference_images(body: dict) -> tuple[list[bytes | str], RequestLayout]:
    inference_id = body.get("id", "")
    layout = RequestLayout(inference_id=inference_id if isinstance(inference_id, str) else "")
    inputs = body["inputs"]
    first = inputs[0] if isinstance(inputs, list) and inputs else None
    data = first.get("data") if isinstance(first, dict) and first.get("datatype") == "BYTES" else None
    if not isinstance(data, list):
        layout.slots.append("Open Inference request needs one BYTES input whose data is a list of base64 images")
        return [], layout
    return [_base64_image(item) for item in data], layout


def _base64_image(item: object) -> bytes | str:
    if not isinstance(item, str):
        return "image is not a base64 string"
    try:
        return base64.b64decode(item, validate=True)
    except ValueError:  # binascii.Error, or a string that is not ASCII
        return "image is not valid base64"
