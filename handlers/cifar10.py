"""TorchServe handler for the CIFAR-10 ResNets: image bytes in, label and top scores out.

Two request shapes, one forward pass for the whole batch that TorchServe's dynamic batching
gathered:

- TorchServe's native API (``/predictions/<model>``): one image as the body, or several images
  as the parts of a multipart form. The answer is a JSON list, one prediction per image.
- The Open Inference Protocol (KServe v2, ``/v2/models/<model>/infer``): one ``BYTES`` input whose
  elements are base64-encoded images. The answer is an inference response with the outputs
  ``label``, ``scores`` (JSON of the top scores) and ``error`` (empty when the image was fine).

An image that cannot be decoded, or a request that is malformed, gets an error in its place; the
other images of the batch, which may be other clients' requests, are still answered.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ts.torch_handler.base_handler import BaseHandler

from handlers.images import batch_row
from handlers.protocols import RequestLayout, request_images
from handlers.resnet import TOP_K, load_checkpoint, prediction


class Cifar10Classifier(BaseHandler):
    def initialize(self, context) -> None:
        manifest = context.manifest["model"]
        model_dir = Path(context.system_properties["model_dir"])
        self.model = load_checkpoint(model_dir / manifest["serializedFile"])
        self.model_name = manifest["modelName"]
        self.model_version = manifest.get("modelVersion", "")
        self.initialized = True

    def preprocess(self, data: list[dict]) -> tuple[torch.Tensor, list[RequestLayout]]:
        tensors: list[torch.Tensor] = []
        layouts: list[RequestLayout] = []
        for request in data:
            images, layout = request_images(request)
            layout.slots += [image if isinstance(image, str) else batch_row(image, tensors) for image in images]
            layouts.append(layout)
        batch = torch.stack(tensors) if tensors else torch.empty(0, 3, 32, 32)
        return batch, layouts

    def inference(self, data: tuple[torch.Tensor, list[RequestLayout]]) -> tuple[torch.Tensor, list[RequestLayout]]:
        batch, layouts = data
        with torch.inference_mode():
            probabilities = torch.softmax(self.model(batch), dim=1) if len(batch) else batch
        return probabilities, layouts

    def postprocess(self, data: tuple[torch.Tensor, list[RequestLayout]]) -> list:
        probabilities, layouts = data
        top = probabilities.topk(TOP_K, dim=1) if len(probabilities) else None
        answers = []
        for layout in layouts:
            predictions = [self._prediction(top, slot) for slot in layout.slots]
            if layout.inference_id is None:
                answers.append(predictions)
            else:
                answers.append(self._inference_response(layout.inference_id, predictions))
        return answers

    def _prediction(self, top, slot: int | str) -> dict:
        answer = prediction(top, slot)
        return answer if "error" in answer else answer | {"model": self.model_name, "model_version": self.model_version}

    def _inference_response(self, inference_id: str, predictions: list[dict]) -> dict:
        def output(name: str, values: list[str]) -> dict:
            return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}

        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "id": inference_id,
            "outputs": [
                output("label", [p.get("label", "") for p in predictions]),
                output("scores", [json.dumps(p.get("scores", {})) for p in predictions]),
                output("error", [p.get("error", "") for p in predictions]),
            ],
        }
