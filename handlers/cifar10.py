"""TorchServe handler for the CIFAR-10 ResNets: image bytes in, label and top scores out.

A request carries one image as its body, or several images as the parts of a multipart form;
TorchServe's dynamic batching then groups requests into one forward pass. The answer to a
request is a JSON list with one prediction per image, in the order sent. An image that cannot
be decoded gets ``{"error": reason}`` in its place; the other images are still answered.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ts.torch_handler.base_handler import BaseHandler

from handlers.images import BadImage, preprocess_bytes
from handlers.resnet import CLASSES, load_checkpoint

TOP_K = 3

# For each request, for each of its images: the image's row in the batch, or why it has none.
Layout = list[list[int | str]]


class Cifar10Classifier(BaseHandler):
    def initialize(self, context) -> None:
        manifest = context.manifest["model"]
        model_dir = Path(context.system_properties["model_dir"])
        self.model = load_checkpoint(model_dir / manifest["serializedFile"])
        self.model_name = manifest["modelName"]
        self.model_version = manifest.get("modelVersion", "")
        self.initialized = True

    def preprocess(self, data: list[dict]) -> tuple[torch.Tensor, Layout]:
        tensors: list[torch.Tensor] = []
        layout: Layout = []
        for request in data:
            slots: list[int | str] = []
            for image in request.values():
                try:
                    tensors.append(preprocess_bytes(image))
                    slots.append(len(tensors) - 1)
                except BadImage as error:
                    slots.append(str(error))
            layout.append(slots)
        batch = torch.stack(tensors) if tensors else torch.empty(0, 3, 32, 32)
        return batch, layout

    def inference(self, data: tuple[torch.Tensor, Layout]) -> tuple[torch.Tensor, Layout]:
        batch, layout = data
        with torch.inference_mode():
            probabilities = torch.softmax(self.model(batch), dim=1) if len(batch) else batch
        return probabilities, layout

    def postprocess(self, data: tuple[torch.Tensor, Layout]) -> list[list[dict]]:
        probabilities, layout = data
        top = probabilities.topk(TOP_K, dim=1) if len(probabilities) else None
        return [[self._prediction(top, slot) for slot in slots] for slots in layout]

    def _prediction(self, top, slot: int | str) -> dict:
        if isinstance(slot, str):
            return {"error": slot}
        probabilities, indices = top.values[slot].tolist(), top.indices[slot].tolist()
        scores = {CLASSES[i]: round(p, 6) for p, i in zip(probabilities, indices, strict=True)}
        return {
            "label": CLASSES[int(top.indices[slot, 0])],
            "scores": scores,
            "model": self.model_name,
            "model_version": self.model_version,
        }
