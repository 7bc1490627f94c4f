"""Image bytes to the network's input: the one preprocessing used online and offline."""

from __future__ import annotations

import io

import torch
from PIL import Image, UnidentifiedImageError

from handlers.resnet import MEAN, STD

SIDE = 32
ACCEPTED_FORMATS = ("JPEG", "PNG")
MAX_PIXELS = 4096 * 4096

_MEAN = torch.tensor(MEAN).view(3, 1, 1)
_STD = torch.tensor(STD).view(3, 1, 1)


class BadImage(ValueError):
    """The bytes are not an image this model accepts; the message says why."""


def decode(data: bytes | bytearray) -> Image.Image:
    """Decode JPEG or PNG bytes to a 32x32 RGB image, refusing oversized images before decoding."""
    if not isinstance(data, bytes | bytearray):
        raise BadImage(f"expected encoded image bytes, got {type(data).__name__}")
    if not data:
        raise BadImage("empty image")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise BadImage(f"image of {width}x{height} pixels is over the limit of {MAX_PIXELS}")
        image = image.convert("RGB")
    except UnidentifiedImageError:
        raise BadImage(f"not a {' or '.join(ACCEPTED_FORMATS)} image") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImage(f"corrupt or truncated image: {error}") from None
    if image.size != (SIDE, SIDE):
        image = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """ToTensor then Normalize with the training mean and std: a 3x32x32 float tensor."""
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(image.height, image.width, 3).permute(2, 0, 1)
    return (pixels.float() / 255.0 - _MEAN) / _STD


def preprocess_bytes(data: bytes | bytearray) -> torch.Tensor:
    return to_tensor(decode(data))
