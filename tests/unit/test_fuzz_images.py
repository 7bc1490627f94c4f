"""Fuzzing the handler's input: for any bytes, the decoder raises only BadImage (that image's error),
and no request of any shape raises out of ``preprocess`` (which would fail every client's batch).

The images are arbitrary bytes, or real CIFAR-10 JPEGs and Pillow-made PNGs mutated.
"""

import base64
import io
import struct
import zlib
from functools import cache

import pytest
import torch
from hypothesis import event as count_outcome
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from handlers.cifar10 import Cifar10Classifier
from handlers.images import MAX_REASON_CHARS, SIDE, BadImage, decode, preprocess_bytes
from handlers.protocols import request_images
from tests.unit.test_fuzz_wire import FUZZ, mutated_bytes, real_images

# Pillow warns about some malformed images that it still decodes; what is checked is the outcome.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


@cache
def made_pngs() -> tuple[bytes, ...]:
    """PNGs of every mode a camera might send, some with a text chunk, some not 32x32."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "made for fuzzing", zip=True)
    pngs = []
    for mode, size in (("RGB", (32, 32)), ("RGBA", (40, 24)), ("L", (32, 32)), ("P", (16, 64)), ("1", (33, 7))):
        buffer = io.BytesIO()
        Image.effect_noise(size, 64).convert(mode).save(buffer, format="PNG", pnginfo=info if mode == "P" else None)
        pngs.append(buffer.getvalue())
    return tuple(pngs)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    seeds = real_images() + made_pngs()
    return draw(mutated_bytes(seeds[draw(st.integers(0, len(seeds) - 1))]))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK_TYPES = (
    b"IHDR",
    b"PLTE",
    b"IDAT",
    b"IEND",
    b"tRNS",
    b"zTXt",
    b"iTXt",
    b"tEXt",
    b"iCCP",
    b"sBIT",
    b"gAMA",
    b"acTL",
)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], len(PNG_SIGNATURE)
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        chunks.append((png[position + 4 : position + 8], png[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def mutated_pngs(draw: st.DrawFn) -> bytes:
    """A made PNG whose chunks are mutated, dropped or added with valid CRCs, so Pillow reads past them."""
    chunks = png_chunks(draw(st.sampled_from(made_pngs())))
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(chunks) - 1))
        kind, data = chunks[index]
        mutation = draw(st.sampled_from(["data", "drop", "add", "compressed"]))
        if mutation == "data":
            chunks[index] = (kind, draw(mutated_bytes(data)))
        elif mutation == "drop" and len(chunks) > 1:
            del chunks[index]
        elif mutation == "add":
            chunks.insert(index, (draw(st.sampled_from(PNG_CHUNK_TYPES)), draw(st.binary(max_size=64))))
        elif mutation == "compressed":  # text or a profile that inflates to a lot: Pillow's own limits
            inflated = draw(st.sampled_from([b"a" * 2**21, b"a" * 100, draw(st.binary(max_size=64))]))
            prefix = draw(st.sampled_from([b"comment\x00\x00", b"icc\x00\x00", b"comment\x00\x01\x00\x00\x00"]))
            chunks.insert(index, (draw(st.sampled_from([b"zTXt", b"iCCP", b"iTXt"])), prefix + zlib.compress(inflated)))
    return PNG_SIGNATURE + b"".join(png_chunk(kind, data) for kind, data in chunks)


images = st.binary(max_size=256) | mutated_images() | mutated_pngs()
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | images,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
base64_items = images.map(lambda data: base64.b64encode(data).decode()) | json_like
open_inference_bodies = st.fixed_dictionaries(
    {
        "inputs": json_like
        | st.lists(
            st.fixed_dictionaries(
                {"datatype": st.just("BYTES") | json_like, "data": st.lists(base64_items, max_size=4) | json_like}
            ),
            max_size=2,
        )
    },
    optional={"id": json_like},
)
requests = st.one_of(
    st.dictionaries(st.text(max_size=8), images | json_like, max_size=4),  # multipart parts, or anything
    st.fixed_dictionaries({"body": images | open_inference_bodies | json_like}),
    json_like,
)


def check_decoded(data: bytes) -> None:
    """The image decodes to one normalised 32x32 RGB tensor, or it is refused with a bounded reason."""
    try:
        tensor = preprocess_bytes(data)
    except BadImage as error:
        assert 0 < len(str(error)) <= MAX_REASON_CHARS
        count_outcome(f"refused: {str(error)[:48]}")
        return
    count_outcome("decoded")
    assert tensor.shape == (3, SIDE, SIDE) and torch.isfinite(tensor).all()


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_only_bad_image(data: bytes) -> None:
    check_decoded(data)


@FUZZ
@given(mutated_images())
def test_mutated_real_jpegs_and_pngs_decode_or_raise_only_bad_image(data: bytes) -> None:
    check_decoded(data)


@FUZZ
@given(mutated_pngs())
def test_pngs_with_mutated_chunks_decode_or_raise_only_bad_image(data: bytes) -> None:
    check_decoded(data)


def test_the_unmutated_seeds_all_decode() -> None:
    for data in real_images() + made_pngs():
        assert decode(data).size == (SIDE, SIDE)


@FUZZ
@given(requests)
def test_request_images_never_raises_for_a_request_of_any_shape(request) -> None:
    found, layout = request_images(request)
    assert all(isinstance(item, bytes | str) for item in found)
    assert all(isinstance(slot, str) for slot in layout.slots)


@FUZZ
@given(st.lists(requests, min_size=1, max_size=4))
def test_preprocess_never_raises_and_places_every_image_of_a_batch_of_any_requests(batch) -> None:
    tensors, layouts = Cifar10Classifier().preprocess(batch)
    assert len(layouts) == len(batch)
    rows = [slot for layout in layouts for slot in layout.slots if isinstance(slot, int)]
    assert sorted(rows) == list(range(len(tensors)))
    assert all(
        0 < len(slot) <= MAX_REASON_CHARS for layout in layouts for slot in layout.slots if isinstance(slot, str)
    )
