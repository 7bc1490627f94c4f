"""The two request shapes the handler reads: TorchServe's native API and the Open Inference Protocol."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field


@dataclass
class RequestLayout:
    """Where a request's images went: each one's row in the batch, or the reason it has none."""

    slots: list[int | str] = field(default_factory=list)
    inference_id: str | None = None  # set for Open Inference Protocol requests


def request_images(request: dict) -> tuple[list[bytes | str], RequestLayout]:
    """The images of one request (or, in their place, why one is unusable) and its layout."""
    body = request.get("body")
    if not isinstance(body, dict) or "inputs" not in body:
        return list(request.values()), RequestLayout()
    layout = RequestLayout(inference_id=str(body.get("id", "")))
    inputs = body["inputs"]
    if not inputs or inputs[0].get("datatype") != "BYTES":
        layout.slots.append("Open Inference request needs one BYTES input of base64-encoded images")
        return [], layout
    return [_base64_image(item) for item in inputs[0].get("data", [])], layout


def _base64_image(item: object) -> bytes | str:
    try:
        return base64.b64decode(item, validate=True) if isinstance(item, str) else "image is not a base64 string"
    except binascii.Error:
        return "image is not valid base64"
