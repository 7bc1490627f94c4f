"""Fuzzing the wire parsers: for any bytes and headers, the only exception is WireError (dead-letter it).

Inputs are arbitrary, or real records mutated: the value's bytes flipped, cut or extended, headers
dropped, repeated with another value, or made non-UTF-8. What a parser accepts must round-trip.
"""

import json
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from typing import TypeVar

from hypothesis import event as count_outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpipe.config import Config
from iotpipe.wire import MAX_REASON_CHARS, PREDICTION_HEADER, ImageEvent, Prediction, WireError, decode_headers
from tests.unit.test_wire import make_prediction, version_1_record

T = TypeVar("T")

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None)
PREDICTION_FIELDS = [field.name for field in fields(Prediction)]
HEADER_FIELDS = [name for name in PREDICTION_FIELDS if name not in ("image", "content_type")]
MAX_BYTES = 4096  # a small max_image_bytes, so that the limit is met often
CLOUDEVENT_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "content-type",
    "ce_subject",
    "ce_groundtruth",
    PREDICTION_HEADER,
)

# Any text, and often plain text with one character that the checks are about: a control, a
# format mark, a lone surrogate (JSON can carry one), a line separator, an astral character, or
# one that ids, times and JSON treat specially.
special_characters = st.sampled_from('\x00\x1b\x7f\u200b\u202e\ud800\udfff\u2028\u2029\U0001f600é_/.:-+TZ 09"\\')
plain_text = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=20)
one_special = st.builds(
    lambda text, at, char: text[:at] + char + text[at:], plain_text, st.integers(0, 20), special_characters
)
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | one_special
timestamps = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes(),
    st.sampled_from(["Z", "+01:00", "-23:59", "", "z", "+24:00"]),
)
header_names = st.one_of(st.sampled_from(CLOUDEVENT_HEADERS), st.text(max_size=20))
header_values = st.one_of(
    st.none(), st.binary(max_size=60), (any_text | timestamps).map(lambda text: text.encode("utf-8", "replace"))
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**400) | st.floats() | any_text | timestamps,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)


@cache
def real_images() -> tuple[bytes, ...]:
    """A few CIFAR-10 test JPEGs, from IOTPIPE_DATA_DIR."""
    paths = sorted(Config.load().data_dir.glob("*/*.jpg"))[::1000]
    assert paths, f"no JPEGs under {Config.load().data_dir}; set IOTPIPE_DATA_DIR to the CIFAR-10 test images"
    return tuple(path.read_bytes() for path in paths)


def real_image_record(index: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    data = real_images()[index % len(real_images())]
    _, value, headers = ImageEvent(source="camera-1", data=data, subject="cat/0001.jpg", ground_truth="cat").to_record()
    return value, headers


def real_prediction(index: int) -> Prediction:
    data = real_images()[index % len(real_images())]
    return make_prediction(id=f"image-{index}", ground_truth=None, image=data, inferred_at="2026-01-01T00:00:00+01:00")


def real_prediction_record(index: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    _, value, headers = real_prediction(index).to_record()
    return value, headers


def real_version_1_record(index: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    _, value, headers = version_1_record(real_prediction(index))
    return value, headers


def with_result(index: int, result: dict) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A real record whose ``ce_prediction`` header holds ``result``."""
    value, headers = real_prediction_record(index)
    kept = [(name, raw) for name, raw in headers if name != PREDICTION_HEADER]
    return value, [*kept, (PREDICTION_HEADER, json.dumps(result).encode())]


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
        position = draw(st.integers(0, len(data)))
        if mutation == "flip" and data:
            data[min(position, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif mutation == "truncate":
            del data[position:]
        elif mutation == "extend":
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
        elif mutation == "splice":
            data[position : position + draw(st.integers(1, 16))] = draw(st.binary(max_size=16))
    return bytes(data)


@st.composite
def mutated_headers(draw: st.DrawFn, original: list[tuple[str, bytes]]) -> list[tuple[str, bytes | None]]:
    headers: list[tuple[str, bytes | None]] = list(original)
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(
            st.sampled_from(["drop", "duplicate", "repeat with another value", "non-utf8", "mutate", "add"])
        )
        index = draw(st.integers(0, max(len(headers) - 1, 0)))
        name, value = headers[index] if headers else ("ce_id", b"x")
        if mutation == "drop" and headers:
            del headers[index]
        elif mutation == "duplicate":
            headers.insert(draw(st.integers(0, len(headers))), (name, value))
        elif mutation == "repeat with another value":
            headers.append((name, draw(header_values)))
        elif mutation == "non-utf8":
            headers[index : index + 1] = [(name, b"\xff" + (value or b""))]
        elif mutation == "mutate":
            headers[index : index + 1] = [(name, draw(mutated_bytes(value or b"")))]
        else:
            headers.append((draw(header_names), draw(header_values)))
    return headers


@st.composite
def mutated_records(draw: st.DrawFn, real_record) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    value, headers = real_record(draw(st.integers(0, 100)))
    return draw(mutated_bytes(value)), draw(mutated_headers(headers))


arbitrary_records = st.tuples(st.none() | st.binary(max_size=64), st.lists(st.tuples(header_names, header_values)))


def accepted(parse: Callable[..., T], *args, **kwargs) -> T | None:
    """What ``parse`` accepts, or None when it refuses: with WireError, the only exception allowed."""
    try:
        parsed = parse(*args, **kwargs)
    except WireError as error:
        assert len(str(error)) <= MAX_REASON_CHARS
        count_outcome(f"refused: {str(error)[:24]}")
        return None
    count_outcome("accepted")
    return parsed


def check_image_record(value: bytes | None, headers: list) -> None:
    """What from_record accepts fits the limit and round-trips."""
    image_event = accepted(ImageEvent.from_record, value, headers, max_bytes=MAX_BYTES)
    if image_event is not None:
        assert 0 < len(image_event.data) <= MAX_BYTES
        _, value, headers = image_event.to_record()
        assert ImageEvent.from_record(value, headers, max_bytes=MAX_BYTES) == image_event


def check_prediction_value(value: bytes | None) -> None:
    prediction = accepted(Prediction.from_value, value)
    if prediction is not None:
        check_round_trip(prediction)


def check_prediction_record(value: bytes | None, headers: list) -> None:
    prediction = accepted(Prediction.from_record, value, headers)
    if prediction is not None:
        check_round_trip(prediction)


def check_round_trip(prediction: Prediction) -> None:
    """An accepted prediction can be published again (and so stored) as it is."""
    _, value, headers = prediction.to_record()
    assert Prediction.from_record(value, headers) == prediction


@FUZZ
@given(arbitrary_records)
def test_image_records_of_arbitrary_bytes_and_headers_raise_only_wire_errors(record) -> None:
    check_image_record(*record)


@FUZZ
@given(mutated_records(real_image_record))
def test_mutated_real_image_records_raise_only_wire_errors_and_what_is_accepted_round_trips(record) -> None:
    check_image_record(*record)


@FUZZ
@given(st.none() | st.binary(max_size=256))
def test_prediction_values_of_arbitrary_bytes_raise_only_wire_errors(value) -> None:
    check_prediction_value(value)


@FUZZ
@given(json_values)
def test_prediction_values_of_arbitrary_json_raise_only_wire_errors(body) -> None:
    check_prediction_value(json.dumps(body).encode())


@FUZZ
@given(st.integers(0, 100), st.sampled_from(PREDICTION_FIELDS), any_text | timestamps | json_values)
def test_a_version_1_prediction_field_set_to_any_value_is_refused_or_round_trips(index, name, value) -> None:
    body = json.loads(real_version_1_record(index)[0]) | {name: value}
    check_prediction_value(json.dumps(body).encode())


@FUZZ
@given(st.integers(0, 100), st.dictionaries(any_text.filter(lambda name: name not in PREDICTION_FIELDS), json_values))
def test_unknown_version_1_prediction_fields_of_any_value_are_ignored(index, extra_fields) -> None:
    value = real_version_1_record(index)[0]
    body = json.loads(value) | extra_fields
    assert Prediction.from_value(json.dumps(body).encode()) == Prediction.from_value(value)


@FUZZ
@given(st.integers(0, 100), json_values)
def test_prediction_headers_of_arbitrary_json_raise_only_wire_errors(index, result) -> None:
    check_prediction_record(*with_result(index, result))


@FUZZ
@given(st.integers(0, 100), st.sampled_from(HEADER_FIELDS), any_text | timestamps | json_values)
def test_a_prediction_header_field_set_to_any_value_is_refused_or_round_trips(index, name, value) -> None:
    result = json.loads(decode_headers(real_prediction_record(index)[1])[PREDICTION_HEADER]) | {name: value}
    check_prediction_record(*with_result(index, result))


@FUZZ
@given(st.integers(0, 100), st.dictionaries(any_text.filter(lambda name: name not in HEADER_FIELDS), json_values))
def test_unknown_prediction_header_fields_of_any_value_are_ignored(index, extra_fields) -> None:
    value, headers = real_prediction_record(index)
    result = json.loads(decode_headers(headers)[PREDICTION_HEADER]) | extra_fields
    assert Prediction.from_record(*with_result(index, result)) == Prediction.from_record(value, headers)


@FUZZ
@given(mutated_records(real_prediction_record))
def test_mutated_real_prediction_records_raise_only_wire_errors_and_what_is_accepted_round_trips(record) -> None:
    check_prediction_record(*record)


@FUZZ
@given(mutated_records(real_version_1_record))
def test_mutated_version_1_prediction_records_raise_only_wire_errors_and_what_is_accepted_round_trips(record) -> None:
    check_prediction_record(*record)


@FUZZ
@given(arbitrary_records)
def test_prediction_records_of_arbitrary_bytes_and_headers_raise_only_wire_errors(record) -> None:
    check_prediction_record(*record)
