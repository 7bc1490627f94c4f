"""The bare-model ceiling: the handler's preprocessing and one forward pass, in process, per batch size.

No Kafka, no HTTP, no database: what the pipeline would reach if moving images cost nothing.
Torch keeps its default thread count (recorded as ``torch_threads``). Each batch size takes the best
of ``repeats`` passes over the images, as ``timeit`` does: other work on the machine only slows a pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iotpipe.config import Config
from producer.images import image_folder, take

if TYPE_CHECKING:
    import torch

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
REPEATS = 3


@dataclass(frozen=True)
class Ceiling:
    images_per_s_by_batch_size: dict[int, float]
    images: int
    torch_threads: int

    @property
    def best_batch_size(self) -> int:
        return max(self.images_per_s_by_batch_size, key=self.images_per_s_by_batch_size.__getitem__)

    @property
    def images_per_s(self) -> float:
        return self.images_per_s_by_batch_size[self.best_batch_size]

    def as_dict(self) -> dict[str, Any]:
        return {
            "images_per_s": self.images_per_s,
            "best_batch_size": self.best_batch_size,
            "images_per_s_by_batch_size": self.images_per_s_by_batch_size,
            "images": self.images,
            "torch_threads": self.torch_threads,
        }


class Bench:
    def __init__(
        self,
        config: Config,
        images: Path | None = None,
        count: int = 512,
        batch_sizes: Sequence[int] = BATCH_SIZES,
        repeats: int = REPEATS,
    ) -> None:
        self.config = config
        self.images = images or config.data_dir
        self.count = count
        self.batch_sizes = batch_sizes
        self.repeats = repeats

    def run(self) -> Ceiling:
        import torch

        from handlers.resnet import load_checkpoint
        from model_archives import checkpoint_path

        model = load_checkpoint(checkpoint_path(self.config, self.config.model_arch))
        encoded = [image.read() for image in take(image_folder(self.images), self.count)]
        rates = {size: images_per_s(model, encoded, size, self.repeats) for size in self.batch_sizes}
        return Ceiling(rates, len(encoded), torch.get_num_threads())


def images_per_s(model: torch.nn.Module, encoded: Sequence[bytes], batch_size: int, repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` passes in batches of ``batch_size``, after a warm-up batch."""
    classify(model, encoded[:batch_size])
    return len(encoded) / min(timed_pass(model, encoded, batch_size) for _ in range(repeats))


def timed_pass(model: torch.nn.Module, encoded: Sequence[bytes], batch_size: int) -> float:
    started = time.perf_counter()
    for first in range(0, len(encoded), batch_size):
        classify(model, encoded[first : first + batch_size])
    return time.perf_counter() - started


def classify(model: torch.nn.Module, encoded: Sequence[bytes]) -> torch.Tensor:
    import torch

    from handlers.images import preprocess_bytes

    with torch.inference_mode():
        return model(torch.stack([preprocess_bytes(data) for data in encoded])).argmax(dim=1)
