"""MLServer runtime for the CIFAR-10 ResNets: the same request and answer as handlers/cifar10.py's OIP path.

The request is one ``BYTES`` input of base64 images; the answer has the outputs ``label``,
``scores`` (JSON of the top scores) and ``error`` (empty when the image was fine), one element
per image. Images are read by handlers.protocols and decoded by handlers.images, as TorchServe's
handler does, so labels and dead-letter reasons are the same on both servers. An image that
cannot be decoded gets its reason in ``error``; MLServer's adaptive batching merges several
clients' requests, and the others' images are still answered.
"""

from __future__ import annotations

import json

import torch
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri

from handlers.images import batch_row
from handlers.protocols import request_images
from handlers.resnet import TOP_K, load_checkpoint, prediction


class Cifar10Runtime(MLModel):
    async def load(self) -> bool:
        self.network = load_checkpoint(await get_model_uri(self.settings))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images, layout = request_images({"body": payload.model_dump()})
        tensors: list[torch.Tensor] = []
        slots = [image if isinstance(image, str) else batch_row(image, tensors) for image in [*layout.slots, *images]]
        top = top_scores(tensors, self.network)
        predictions = [prediction(top, slot) for slot in slots]
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                bytes_output("label", [p.get("label", "") for p in predictions]),
                bytes_output("scores", [json.dumps(p.get("scores", {})) for p in predictions]),
                bytes_output("error", [p.get("error", "") for p in predictions]),
            ],
        )


def top_scores(tensors: list[torch.Tensor], network: torch.nn.Module) -> torch.return_types.topk | None:
    """One forward pass over every decodable image: the top scores of each, by row."""
    if not tensors:
        return None
    with torch.inference_mode():
        return torch.softmax(network(torch.stack(tensors)), dim=1).topk(TOP_K, dim=1)


def bytes_output(name: str, values: list[str]) -> ResponseOutput:
    return ResponseOutput(name=name, datatype="BYTES", shape=[len(values)], data=values)
