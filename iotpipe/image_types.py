"""The kinds of image the pipeline accepts, JPEG and PNG, defined once.

Each kind has its media type (a record's ``content-type``, CouchDB's attachment type), its Pillow
format (what the model's handler decodes) and the file suffixes a camera reads from its folder.
handlers/images.py keeps its own copy of the Pillow formats, as the model archive carries only
handlers/; tests/unit/test_handler.py checks that the copy equals ``PILLOW_FORMATS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageType:
    content_type: str
    pillow_format: str
    suffixes: tuple[str, ...]


IMAGE_TYPES = (
    ImageType("image/jpeg", "JPEG", (".jpg", ".jpeg")),
    ImageType("image/png", "PNG", (".png",)),
)
CONTENT_TYPES = tuple(kind.content_type for kind in IMAGE_TYPES)
PILLOW_FORMATS = tuple(kind.pillow_format for kind in IMAGE_TYPES)
CONTENT_TYPE_OF_SUFFIX = {suffix: kind.content_type for kind in IMAGE_TYPES for suffix in kind.suffixes}
NAMES = " or ".join(PILLOW_FORMATS)  # for messages: "not a JPEG or PNG image"
