"""Image bytes to the network's input: the one preprocessing used online and offline."""

from __future__ import annotations

import io

import torch
from PIL import Image, UnidentifiedImageError

from handlers.resnet import MEAN, STD

SIDE = 32
# iotpipe.image_types.PILLOW_FORMATS: the model archive carries only handlers/, so this is a copy
# (tests/unit/test_handler.py checks that the two are equal).
ACCEPTED_FORMATS = ("JPEG", "PNG")
# An image more than 32 times the model's side in either direction gives the network no more than
# its 32x32 downscale does, and decoding it costs memory and time that one camera could use to
# stall every batch it shares: 1024x1024 is a 3 MiB RGB decode, about 10 ms.
MAX_SIDE = 32 * SIDE
# The model archive carries only handlers/, so iotpipe.wire.cut is not importable here; the
# bridge cuts every dead-letter reason again to its own limit, which is longer than this one.
MAX_REASON_CHARS = 200

_MEAN = torch.tensor(MEAN).view(3, 1, 1)
_STD = torch.tensor(STD).view(3, 1, 1)


class BadImage(ValueError):
    """The bytes are not an image this model accepts; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…")


def decode(data: bytes | bytearray) -> Image.Image:
    """Decode JPEG or PNG bytes to a 32x32 RGB image, refusing oversized images before decoding.

    Any failure to decode is this image's ``BadImage``: Pillow raises many kinds of exception
    (ValueError, SyntaxError, struct.error, EOFError, zlib.error, MemoryError, ...) for bad input,
    and none of them may fail the other images of a batch.
    """
    if not isinstance(data, bytes | bytearray):
        raise BadImage(f"expected encoded image bytes, got {type(data).__name__}")
    if not data:
        raise BadImage("empty image")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        check_size(*image.size)
        image = image.convert("RGB")
        if image.size != (SIDE, SIDE):
            image = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"not a {' or '.join(ACCEPTED_FORMATS)} image") from None
    except Exception as error:
        raise BadImage(f"corrupt or truncated image: {describe(error)}") from None
    return image


def check_size(width: int, height: int) -> None:
    """Refuse, from the header alone, an image too large to decode for this model."""
    if width > MAX_SIDE or height > MAX_SIDE:
        raise BadImage(f"image of {width}x{height} pixels is over the limit of {MAX_SIDE}x{MAX_SIDE}")


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def to_tensor(image: Image.Image) -> torch.Tensor:
    """ToTensor then Normalize with the training mean and std: a 3x32x32 float tensor."""
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(image.height, image.width, 3).permute(2, 0, 1)
    return (pixels.float() / 255.0 - _MEAN) / _STD


def preprocess_bytes(data: bytes | bytearray) -> torch.Tensor:
    return to_tensor(decode(data))


def batch_row(image: bytes, tensors: list[torch.Tensor]) -> int | str:
    """Append the image's tensor and return its row, or return why it cannot be decoded."""
    try:
        tensors.append(preprocess_bytes(image))
    except BadImage as error:
        return str(error)
    return len(tensors) - 1
