import json

import pytest

from iotpipe.wire import REASON_HEADER, ImageEvent, Prediction, WireError, dead_letter_headers, decode_headers


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


def test_unknown_ground_truth_is_left_out_of_the_headers() -> None:
    _, _, headers = ImageEvent(source="c", data=b"x").to_record()
    assert "ce_groundtruth" not in decode_headers(headers)


@pytest.mark.parametrize(
    ("drop", "reason"),
    [("ce_specversion", "ce_specversion"), ("ce_id", "ce_id"), ("ce_source", "ce_source"), ("content-type", "content")],
)
def test_missing_header_is_a_wire_error_naming_it(drop: str, reason: str) -> None:
    _, value, headers = ImageEvent(source="c", data=b"x").to_record()
    with pytest.raises(WireError, match=reason):
        ImageEvent.from_record(value, [(k, v) for k, v in headers if k != drop])


def test_unknown_content_type_and_empty_value_are_wire_errors() -> None:
    _, value, headers = ImageEvent(source="c", data=b"x", content_type="image/gif").to_record()
    with pytest.raises(WireError, match="image/gif"):
        ImageEvent.from_record(value, headers)
    _, _, headers = ImageEvent(source="c", data=b"x").to_record()
    with pytest.raises(WireError, match="empty"):
        ImageEvent.from_record(b"", headers)


def test_prediction_round_trips_through_json_with_the_image() -> None:
    prediction = make_prediction()
    key, value, headers = prediction.to_record()
    assert key == b"camera-1"
    assert json.loads(value)["label"] == "dog"
    assert decode_headers(headers)["ce_id"] == "abc"
    assert Prediction.from_value(value) == prediction


@pytest.mark.parametrize("value", [b"", b"not json", b"[]", b'{"id": "x"}', json.dumps({"image": "@@"}).encode()])
def test_malformed_prediction_is_a_wire_error(value: bytes) -> None:
    with pytest.raises(WireError, match="malformed prediction"):
        Prediction.from_value(value)


def test_dead_letter_headers_keep_the_originals_and_add_one_reason() -> None:
    original = [("ce_id", b"1"), (REASON_HEADER, b"old")]
    assert dead_letter_headers(original, "not an image") == [("ce_id", b"1"), (REASON_HEADER, b"not an image")]


def test_partition_of_matches_the_producers_default_partitioner() -> None:
    from kafka.partitioner.default import DefaultPartitioner

    from iotpipe.kafka import partition_of

    cluster = type("Cluster", (), {"topics": lambda self: {"t"}, "partitions_for_topic": lambda self, t: {0, 1, 2}})
    cluster.available_partitions_for_topic = lambda self, t: {0, 1, 2}
    for producer_id in ("camera-1", "camera-2", "lt-abc-p5-4"):
        key = producer_id.encode()
        expected = DefaultPartitioner().partition("t", producer_id, key, None, None, cluster())
        assert partition_of(key, [2, 0, 1]) == expected


def test_a_ce_time_that_is_not_a_timestamp_is_a_wire_error() -> None:
    _, value, headers = ImageEvent(source="c", data=b"x", time="yesterday").to_record()
    with pytest.raises(WireError, match="ce_time"):
        ImageEvent.from_record(value, headers)
