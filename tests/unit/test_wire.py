import base64
import json
from dataclasses import fields, replace
from types import SimpleNamespace

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from iotpipe.config import Config
from iotpipe.wire import (
    ATTEMPTS_HEADER,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    MAX_SCORES,
    MAX_TEXT_CHARS,
    PREDICTION_HEADER,
    REASON_HEADER,
    STAGE_HEADER,
    ImageEvent,
    Prediction,
    WireError,
    check_id,
    check_text,
    dead_letter_headers,
    decode_headers,
    input_record_limit,
    max_image_bytes,
)


def make_prediction(**changes) -> Prediction:
    fields = dict(
        id="abc",
        producer_id="camera-1",
        subject="cat/0001.jpg",
        ground_truth="cat",
        label="dog",
        scores={"dog": 0.6, "cat": 0.3, "frog": 0.1},
        model="cifar10-resnet",
        model_version="20.1",
        sent_at="2026-01-01T00:00:00.000000Z",
        received_at="2026-01-01T00:00:00.010000Z",
        inferred_at="2026-01-01T00:00:00.020000Z",
        content_type="image/jpeg",
        image=b"\xff\xd8jpeg",
    )
    return Prediction(**(fields | changes))


def version_1_record(prediction: Prediction) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """What an older bridge wrote: the whole prediction as a JSON value, the image in base64."""
    body = {f.name: getattr(prediction, f.name) for f in fields(prediction)}
    body["image"] = base64.b64encode(prediction.image).decode()
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", prediction.id.encode()),
        ("ce_source", b"iotpipe-bridge"),
        ("ce_type", b"org.iotpipe.prediction.v1"),
        ("ce_time", prediction.inferred_at.encode()),
        ("content-type", b"application/json"),
    ]
    value = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return prediction.producer_id.encode(), value, headers


def image_record(**changes) -> tuple[bytes, list[tuple[str, bytes]]]:
    _, value, headers = ImageEvent(**({"source": "camera-1", "data": b"\xff\xd8..."} | changes)).to_record()
    return value, headers


def with_header(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers if k != name] + [(name, value)]


def test_image_event_is_a_binary_mode_cloudevent_keyed_by_producer() -> None:
    event = ImageEvent(source="camera-7", data=b"\xff\xd8...", subject="cat/1.jpg", ground_truth="cat")
    key, value, headers = event.to_record()
    attributes = decode_headers(headers)
    assert key == b"camera-7"
    assert value == b"\xff\xd8..."  # the image itself: no JSON, no base64
    assert attributes["ce_specversion"] == "1.0"
    assert attributes["ce_id"] == event.id
    assert attributes["ce_source"] == "camera-7"
    assert attributes["ce_type"] == "org.iotpipe.image.v1"
    assert attributes["ce_time"].endswith("Z")
    assert attributes["content-type"] == "image/jpeg"
    assert attributes["ce_groundtruth"] == "cat"
    assert ImageEvent.from_record(value, headers) == event


def test_a_prediction_answers_its_image_event_with_the_model_servers_label() -> None:
    event = ImageEvent(source="camera-1", data=b"\xff\xd8jpeg", id="abc", time="2026-01-01T00:00:00.000000Z")
    event = replace(event, subject="cat/0001.jpg", ground_truth="cat")
    scores = {"dog": 0.6, "cat": 0.3, "frog": 0.1}
    answer = SimpleNamespace(label="dog", scores=scores, model="cifar10-resnet", model_version="20.1")
    received, inferred = "2026-01-01T00:00:00.010000Z", "2026-01-01T00:00:00.020000Z"
    assert Prediction.answering(event, answer, received, inferred) == make_prediction()


def test_unknown_ground_truth_is_left_out_of_the_headers() -> None:
    _, _, headers = ImageEvent(source="c", data=b"x").to_record()
    assert "ce_groundtruth" not in decode_headers(headers)


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        ("ce_specversion", "ce_specversion"),
        ("ce_id", "ce_id"),
        ("ce_source", "ce_source"),
        ("ce_type", "ce_type"),
        ("ce_time", "ce_time"),
        ("content-type", "content"),
    ],
)
def test_missing_header_is_a_wire_error_naming_it(drop: str, reason: str) -> None:
    value, headers = image_record()
    with pytest.raises(WireError, match=reason):
        ImageEvent.from_record(value, [(k, v) for k, v in headers if k != drop])


def test_unknown_content_type_and_empty_value_are_wire_errors() -> None:
    value, headers = image_record(content_type="image/gif")
    with pytest.raises(WireError, match="image/gif"):
        ImageEvent.from_record(value, headers)
    _, headers = image_record()
    with pytest.raises(WireError, match="empty"):
        ImageEvent.from_record(b"", headers)


def test_an_event_of_another_type_is_a_wire_error() -> None:
    value, headers = image_record()
    with pytest.raises(WireError, match=r"ce_type 'org\.example\.other'"):
        ImageEvent.from_record(value, with_header(headers, "ce_type", b"org.example.other"))


def test_an_image_over_the_limit_is_refused_with_both_sizes() -> None:
    value, headers = image_record(data=b"x" * 101)
    assert ImageEvent.from_record(value, headers, max_bytes=101).data == value
    with pytest.raises(WireError, match="101 bytes is over the limit of 100 bytes"):
        ImageEvent.from_record(value, headers, max_bytes=100)


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "_design/x",
        "_all_docs",
        "a/b",
        ".",
        "..",
        "a\x00b",
        "line\nbreak",
        "bidi\u202eflip",
        "x" * (MAX_ID_CHARS + 1),
    ],
)
@pytest.mark.parametrize("header", ["ce_id", "ce_source"])
def test_ids_that_couchdb_or_a_url_would_not_take_are_refused(header: str, bad_id: str) -> None:
    value, headers = image_record()
    with pytest.raises(WireError, match=header):
        ImageEvent.from_record(value, with_header(headers, header, bad_id.encode()))


@pytest.mark.parametrize(
    "good_id", ["camera-1", "lt-abc-p5-4", "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b", "kamera-ü", "x" * MAX_ID_CHARS]
)
def test_ordinary_ids_are_accepted(good_id: str) -> None:
    assert check_id(good_id, "id") == good_id


@pytest.mark.parametrize(("header", "limit"), [("ce_subject", MAX_TEXT_CHARS), ("ce_groundtruth", MAX_TEXT_CHARS)])
def test_subject_and_ground_truth_are_capped_and_free_of_control_characters(header: str, limit: int) -> None:
    value, headers = image_record()
    assert ImageEvent.from_record(value, with_header(headers, header, b"x" * limit))
    for bad in (b"x" * (limit + 1), b"cat\x1b[31m"):
        with pytest.raises(WireError, match=header):
            ImageEvent.from_record(value, with_header(headers, header, bad))


@pytest.mark.parametrize(
    "time",
    [
        "yesterday",
        "2026-01-01",
        "2026-01-01T00:00:00",  # no offset
        "2026-02-30T00:00:00Z",
        "\uff12\uff10\uff12\uff16-01-01T00:00:00Z",  # full-width digits, which int() would read
    ],
)
def test_a_ce_time_that_is_not_an_rfc3339_timestamp_is_a_wire_error(time: str) -> None:
    value, headers = image_record(time=time)
    with pytest.raises(WireError, match="ce_time"):
        ImageEvent.from_record(value, headers)


def test_a_header_given_twice_with_different_values_is_refused_and_twice_alike_is_not() -> None:
    value, headers = image_record()
    ce_id = decode_headers(headers)["ce_id"].encode()
    assert ImageEvent.from_record(value, [*headers, ("ce_id", ce_id)])
    with pytest.raises(WireError, match="ce_id appears twice"):
        ImageEvent.from_record(value, [*headers, ("ce_id", b"other")])


def test_a_cameras_own_headers_are_not_read_but_cloudevents_ones_must_be_utf8() -> None:
    value, headers = image_record()
    assert ImageEvent.from_record(value, [*headers, ("trace", b"\xff\xfe binary")])
    with pytest.raises(WireError, match="ce_subject is not UTF-8"):
        ImageEvent.from_record(value, [*headers, ("ce_subject", b"\xff")])


def test_prediction_is_a_binary_mode_cloudevent_whose_value_is_the_image_as_it_came() -> None:
    prediction = make_prediction()
    key, value, headers = prediction.to_record()
    attributes = decode_headers(headers)
    assert (key, value) == (b"camera-1", b"\xff\xd8jpeg")  # no base64, no JSON around the image
    assert (attributes["ce_id"], attributes["content-type"]) == ("abc", "image/jpeg")
    assert json.loads(attributes[PREDICTION_HEADER])["label"] == "dog"
    assert Prediction.from_record(value, headers) == prediction


def test_a_version_1_prediction_from_an_older_bridge_is_still_read() -> None:
    prediction = make_prediction()
    _, value, headers = version_1_record(prediction)
    assert Prediction.from_value(value) == prediction
    assert Prediction.from_record(value, headers) == prediction


@pytest.mark.parametrize("value", [b"", b"not json", b"[]", b'{"id": "x"}', b"[" * 100_000, b"\xff\xfe\x00"])
def test_malformed_prediction_is_a_wire_error(value: bytes) -> None:
    with pytest.raises(WireError, match="malformed prediction"):
        Prediction.from_value(value)


def prediction_body(**changes) -> bytes:
    """A version 1 value, changed."""
    body = json.loads(version_1_record(make_prediction())[1])
    return json.dumps(body | changes).encode()


def with_result(**changes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A version 2 record whose ``ce_prediction`` header is changed (a value of ... removes the field)."""
    _, value, headers = make_prediction().to_record()
    result = json.loads(decode_headers(headers)[PREDICTION_HEADER]) | changes
    result = {name: field for name, field in result.items() if field is not ...}
    return value, with_header(headers, PREDICTION_HEADER, json.dumps(result).encode())


@pytest.mark.parametrize("name", [f.name for f in fields(Prediction)])
def test_every_prediction_field_is_type_checked(name: str) -> None:
    with pytest.raises(WireError, match=f"prediction field {name} "):
        Prediction.from_value(prediction_body(**{name: [1]}))


@pytest.mark.parametrize("name", [f.name for f in fields(Prediction) if f.name not in ("image", "content_type")])
def test_every_field_of_the_prediction_header_is_type_checked(name: str) -> None:
    with pytest.raises(WireError, match=f"prediction field {name} "):
        Prediction.from_record(*with_result(**{name: [1]}))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"", "header ce_prediction is not JSON"),
        (b"[1]", "header ce_prediction is a JSON list"),
        (b'{"id": "abc"}', "missing field"),
        (b"\xff", "ce_prediction is not UTF-8"),
    ],
)
def test_a_malformed_prediction_header_is_a_wire_error(header: bytes, reason: str) -> None:
    _, value, headers = make_prediction().to_record()
    with pytest.raises(WireError, match=reason):
        Prediction.from_record(value, with_header(headers, PREDICTION_HEADER, header))


def test_a_prediction_record_without_its_result_header_or_image_is_refused() -> None:
    _, value, headers = make_prediction().to_record()
    with pytest.raises(WireError, match="missing CloudEvents header ce_prediction"):
        Prediction.from_record(value, [(name, v) for name, v in headers if name != PREDICTION_HEADER])
    with pytest.raises(WireError, match="empty value"):
        Prediction.from_record(b"", headers)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "_design/x"}, "field id"),
        ({"producer_id": ""}, "field producer_id is empty"),
        ({"label": None}, "field label is a NoneType"),
        ({"label": "x" * (MAX_NAME_CHARS + 1)}, "field label has"),
        ({"subject": "\ud800"}, "field subject contains the control character U\\+D800"),
        ({"scores": {"dog": "0.6"}}, "scores\\['dog'\\] is a str"),
        ({"scores": {"dog": True}}, "scores\\['dog'\\] is a bool"),
        ({"scores": {"dog": 10**400}}, "not a finite number"),
        ({"scores": {f"c{i}": 0.1 for i in range(MAX_SCORES + 1)}}, "more than the limit"),
        ({"sent_at": "yesterday"}, "field sent_at"),
        ({"content_type": "text/html"}, "text/html"),
        ({"image": "@@"}, "not valid base64"),
        ({"image": ""}, "field image is empty"),
    ],
)
def test_a_prediction_field_of_the_right_type_but_a_wrong_value_is_refused(change: dict, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        Prediction.from_value(prediction_body(**change))


def test_non_finite_scores_are_refused() -> None:
    value = prediction_body().replace(b'"dog":0.6', b'"dog":NaN').replace(b'"dog": 0.6', b'"dog": NaN')
    with pytest.raises(WireError, match="not a finite number"):
        Prediction.from_value(value)


def test_unknown_prediction_fields_are_ignored_so_a_newer_bridge_can_add_one() -> None:
    assert Prediction.from_value(prediction_body(added_by_a_newer_bridge={"x": 1})) == make_prediction()
    assert Prediction.from_record(*with_result(added_by_a_newer_bridge={"x": 1})) == make_prediction()


def test_absent_subject_and_ground_truth_travel_as_null() -> None:
    prediction = make_prediction(subject=None, ground_truth=None)
    assert Prediction.from_record(*prediction.to_record()[1:]) == prediction


@pytest.mark.parametrize(
    ("encode", "wrong_type"),  # each version's content type is its own
    [(Prediction.to_record, b"application/json"), (version_1_record, b"image/jpeg")],
    ids=["version 2", "version 1"],
)
def test_a_prediction_record_needs_its_cloudevents_headers(encode, wrong_type: bytes) -> None:
    _, value, headers = encode(make_prediction())
    cases = [("ce_type", b"org.iotpipe.image.v1"), ("content-type", b"text/plain"), ("content-type", wrong_type)]
    for name, wrong in [*cases, ("ce_id", b"other")]:
        with pytest.raises(WireError, match=name):
            Prediction.from_record(value, with_header(headers, name, wrong))


def test_reasons_are_cut_to_a_bounded_length() -> None:
    with pytest.raises(WireError) as refused:
        Prediction.from_value(prediction_body(content_type="x" * 100_000))
    assert len(str(refused.value)) <= MAX_REASON_CHARS


def accepted(text: str) -> bool:
    try:
        check_text(text, "probe")
    except WireError:
        return False
    return True


def worst_character() -> str:
    """Of the characters a text field accepts, the one that takes the most bytes in a prediction.

    Every ASCII character (controls escape to 6 bytes in JSON, but are refused) and one of each
    UTF-8 length, a lone surrogate (12 bytes as a JSON escape, refused) and a line separator.
    """
    candidates = [chr(c) for c in range(0x80)] + ["é", "€", "\u2028", "\ud800", "\U0001f600"]
    return max(filter(accepted, candidates), key=lambda c: len(json.dumps(c, ensure_ascii=False).encode()))


def longest(limit: int, index: int = 0) -> str:
    """``limit`` of the worst characters, the last one varied by ``index`` (dict keys must differ)."""
    return worst_character() * (limit - 1) + chr(0x1F600 + index)


@pytest.mark.parametrize("max_request_size", [Config().max_request_size, 2**20 + 1, 2**20 + 2, 10 * 2**20 + 3])
def test_any_image_accepted_on_iot_images_fits_its_prediction_record(max_request_size: int) -> None:
    longest_time = "2026-01-01T00:00:00.123456789+01:00"
    prediction = Prediction(
        id=longest(MAX_ID_CHARS),
        producer_id=longest(MAX_ID_CHARS),
        subject=longest(MAX_TEXT_CHARS),
        ground_truth=longest(MAX_TEXT_CHARS),
        label=longest(MAX_NAME_CHARS),
        scores={longest(MAX_NAME_CHARS, i): -2.2250738585072014e-308 for i in range(MAX_SCORES)},
        model=longest(MAX_NAME_CHARS),
        model_version=longest(MAX_NAME_CHARS),
        sent_at=longest_time,
        received_at=longest_time,
        inferred_at=longest_time,
        content_type="image/jpeg",
        image=b"\xff" * max_image_bytes(max_request_size),
    )
    for key, value, headers in (prediction.to_record(), version_1_record(prediction)):  # a rollback writes v1
        assert Prediction.from_record(value, headers) == prediction  # every field at its cap is accepted
        record_size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)  # as KafkaProducer checks
        assert record_size <= input_record_limit(max_request_size)


def test_dead_letter_headers_keep_every_original_and_replace_an_earlier_context() -> None:
    original = [("ce_id", b"1"), ("camera-trace", b"\x00\x01"), (REASON_HEADER, b"old"), (ATTEMPTS_HEADER, b"9")]
    headers = dead_letter_headers(original, "x" * 10_000, stage="inference", attempts=3)
    assert headers[:2] == original[:2]
    context = {name: value for name, value in headers[2:]}
    assert len(context[REASON_HEADER].decode()) == MAX_REASON_CHARS
    assert (context[ATTEMPTS_HEADER], context[STAGE_HEADER]) == (b"3", b"inference")
    assert [name for name, _ in headers].count(REASON_HEADER) == 1


def test_partition_of_matches_the_producers_default_partitioner() -> None:
    from kafka.partitioner.default import DefaultPartitioner

    from iotpipe.kafka_clients import partition_of

    cluster = type("Cluster", (), {"topics": lambda self: {"t"}, "partitions_for_topic": lambda self, t: {0, 1, 2}})
    cluster.available_partitions_for_topic = lambda self, t: {0, 1, 2}
    for producer_id in ("camera-1", "camera-2", "lt-abc-p5-4"):
        key = producer_id.encode()
        expected = DefaultPartitioner().partition("t", producer_id, key, None, None, cluster())
        assert partition_of(key, [2, 0, 1]) == expected
