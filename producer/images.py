"""Where a camera's pictures come from: an ImageFolder tree, or the CIFAR-10 python batches."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iotpipe.image_types import CONTENT_TYPE_OF_SUFFIX, NAMES


class MissingImages(FileNotFoundError):
    pass


@dataclass(frozen=True)
class SourceImage:
    name: str
    label: str | None
    content_type: str
    path: Path | None = None
    encoded: bytes | None = None
    event_id: str | None = None  # the CloudEvents id to send it with; a new one for each sending when None

    def read(self) -> bytes:
        return self.encoded if self.encoded is not None else self.path.read_bytes()


def image_folder(root: Path) -> list[SourceImage]:
    """``root/<class>/<file>`` images sorted by class then file, labelled by their folder."""
    if not root.is_dir():
        raise MissingImages(
            f"image folder {root} does not exist; set IOTPIPE_DATA_DIR (or --images) to a folder "
            "in the ImageFolder layout, e.g. the CIFAR-10 test set as <class>/<n>.jpg"
        )
    images = [
        SourceImage(
            f"{path.parent.name}/{path.name}", path.parent.name, CONTENT_TYPE_OF_SUFFIX[path.suffix.lower()], path
        )
        for path in sorted(root.glob("*/*"))
        if path.suffix.lower() in CONTENT_TYPE_OF_SUFFIX
    ]
    if not images:
        raise MissingImages(f"no {NAMES} images ({', '.join(CONTENT_TYPE_OF_SUFFIX)}) in the class folders of {root}")
    return images


def cifar10_batches(root: Path, download: bool = False) -> list[SourceImage]:
    """The CIFAR-10 test split from the python batches (``cifar-10-batches-py``), as PNG (lossless)."""
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as error:
        raise MissingImages(
            f"{error} (looked in {root}); pass --download with network access, or point --cifar10-root "
            "at the folder that holds cifar-10-batches-py"
        ) from None
    return [_png(index, image, dataset.classes[label]) for index, (image, label) in enumerate(dataset)]


def _png(index: int, image, label: str) -> SourceImage:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return SourceImage(f"test_batch/{index:05d}.png", label, "image/png", encoded=buffer.getvalue())


def take(images: Sequence[SourceImage], count: int) -> list[SourceImage]:
    """``count`` images, cycling through the source when it has fewer."""
    return [images[i % len(images)] for i in range(count)]
