"""Dead letters read back, grouped, selected and replayed, with fake records and a fake producer."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from app.commands import build_parser
from app.dead_letters import printable, report, since, table
from iotpipe import dead_letters
from iotpipe.config import Config
from iotpipe.dead_letters import (
    MAX_REPLAYS,
    NO_REASON,
    DeadLetter,
    destination,
    replay,
    replay_headers,
    select,
    summarize,
)
from iotpipe.wire import (
    ATTEMPTS_HEADER,
    DEAD_LETTER_PREFIX,
    DEAD_LETTER_TIME_HEADER,
    MAX_REASON_CHARS,
    REASON_HEADER,
    REPLAYS_HEADER,
    Headers,
    ImageEvent,
    Origin,
    dead_letter_headers,
    parse_time,
)

CONFIG = Config()
CAMERA_HEADER = ("x-camera-firmware", b"4.2")


def record(headers: Headers, *, topic: str = "iot-images-dlq", offset: int = 0, timestamp: int = 0) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, -1, offset, timestamp, 0, b"camera-1", b"not an image", headers, None, 8, 12, -1)


def dead_letter(
    reason: str = "not a JPEG or PNG",
    *,
    image_id: str = "img-1",
    at: str = "2026-01-01T00:00:00Z",
    stage: str = "decode",
    replays: int = 0,
    topic: str = "iot-images-dlq",
    origin: str | None = "iot-images",
    offset: int = 0,
) -> DeadLetter:
    """A dead letter as the pipeline writes it, dead-lettered at ``at``."""
    _, _, original = ImageEvent(source="camera-1", data=b"x", id=image_id).to_record()
    original.append(CAMERA_HEADER)
    if replays:
        original.append((REPLAYS_HEADER, str(replays).encode()))
    where = Origin(origin, 1, 42) if origin else None
    headers = dead_letter_headers(original, reason, stage=stage, attempts=3, origin=where)
    headers = [(name, at.encode() if name.endswith("_time") else value) for name, value in headers]
    return DeadLetter.from_record(record(headers, topic=topic, offset=offset))


def test_a_dead_letter_is_parsed_from_the_context_headers_the_pipeline_writes() -> None:
    parsed = dead_letter("cannot identify image file", image_id="abc", stage="decode", replays=2)
    assert parsed.reason == "cannot identify image file"
    assert (parsed.id, parsed.stage, parsed.attempts, parsed.replays) == ("abc", "decode", 3, 2)
    assert parsed.origin_topic == "iot-images"
    assert parsed.time == parse_time("2026-01-01T00:00:00Z")
    assert (parsed.key, parsed.value) == (b"camera-1", b"not an image")


def test_a_record_without_context_headers_still_parses_with_its_kafka_timestamp() -> None:
    parsed = DeadLetter.from_record(record([], timestamp=1_700_000_000_500, offset=7))
    assert parsed.reason == NO_REASON
    assert (parsed.id, parsed.stage, parsed.attempts, parsed.origin_topic, parsed.replays) == (
        None,
        None,
        None,
        None,
        0,
    )
    assert parsed.time == 1_700_000_000.5
    assert parsed.name == "iot-images-dlq/0@7"


@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(["ce_id", REASON_HEADER, DEAD_LETTER_TIME_HEADER, REPLAYS_HEADER, ATTEMPTS_HEADER])
            | st.text(max_size=20),
            st.binary(max_size=2000)
            | st.none()
            | st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat().encode()),
        ),
        max_size=8,
    ),
    timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.none(),
)
def test_any_record_parses_and_prints_without_an_exception(headers, timestamp) -> None:
    parsed = DeadLetter.from_record(record(headers, timestamp=timestamp))
    assert len(parsed.reason) <= MAX_REASON_CHARS
    assert parsed.replays >= 0
    assert parsed.attempts is None or parsed.attempts >= 0
    summary = summarize([parsed])
    json.dumps(summary.to_json())
    list(table(summary, limit=1))


def test_the_summary_groups_by_reason_most_frequent_first_with_totals_per_topic() -> None:
    letters = [
        dead_letter("not a JPEG or PNG", image_id="a", at="2026-01-01T00:00:01Z"),
        dead_letter("empty value", image_id="b", at="2026-01-01T00:00:02Z", stage="wire"),
        dead_letter("not a JPEG or PNG", image_id="c", at="2026-01-01T00:00:03Z", stage="inference"),
        dead_letter("not a JPEG or PNG", image_id="a", at="2026-01-01T00:00:04Z"),
        dead_letter("bad field", image_id="d", topic="iot-predictions-dlq", origin="iot-predictions"),
    ]
    summary = summarize(letters)
    jpeg = summary.groups[0]
    assert (jpeg.reason, jpeg.count) == ("not a JPEG or PNG", 3)
    assert jpeg.ids == ("a", "c")
    assert jpeg.stages == ("decode", "inference")
    assert jpeg.origin_topics == ("iot-images",)
    assert (jpeg.first, jpeg.last) == (parse_time("2026-01-01T00:00:01Z"), parse_time("2026-01-01T00:00:04Z"))
    assert summary.per_topic == {"iot-images-dlq": 4, "iot-predictions-dlq": 1}
    assert summary.total == 5

    recent = summarize(letters, since=parse_time("2026-01-01T00:00:02Z"))
    assert {group.reason: group.count for group in recent.groups} == {"empty value": 1, "not a JPEG or PNG": 2}


def test_only_the_latest_dead_letter_of_an_id_is_selected() -> None:
    first = dead_letter("not a JPEG or PNG", image_id="a", at="2026-01-01T00:00:01Z")
    again = dead_letter("model server refused", image_id="a", at="2026-01-01T00:00:09Z", replays=1, offset=5)
    other = dead_letter("not a JPEG or PNG", image_id="b", at="2026-01-01T00:00:05Z", offset=3)
    letters = [again, first, other]
    assert select(letters) == [other, again]
    assert select(letters, reason="jpeg") == [other]
    assert select(letters, reason="REFUSED") == [again]
    assert select(letters, ids=["a"]) == [again]
    assert select(letters, stage="decode") == [other, again]
    assert select(letters, stage="inference") == []


def test_dead_letters_without_an_id_are_each_selected() -> None:
    nameless = [DeadLetter.from_record(record([], offset=offset)) for offset in range(3)]
    assert select(nameless) == nameless


def test_a_replay_keeps_the_original_headers_without_the_context_and_counts_the_replay() -> None:
    headers = replay_headers(dead_letter(replays=1))
    names = [name for name, _ in headers]
    assert not any(name.startswith(DEAD_LETTER_PREFIX) for name in names)
    assert CAMERA_HEADER in headers
    assert names.count(REPLAYS_HEADER) == 1
    assert dict(headers)[REPLAYS_HEADER] == b"2"


@given(
    original=st.lists(
        st.tuples(st.text(min_size=1, max_size=20).filter(lambda n: not n.startswith("iotpipe_")), st.binary()),
        max_size=6,
    ),
    reason=st.text(),
)
def test_replay_restores_every_original_header_in_order(original: Headers, reason: str) -> None:
    headers = dead_letter_headers(original, reason, stage="decode", origin=Origin("iot-images", 0, 1))
    assert replay_headers(DeadLetter.from_record(record(headers))) == [*original, (REPLAYS_HEADER, b"1")]


def test_a_dead_letter_goes_back_to_its_origin_or_to_the_source_of_its_dead_letter_topic() -> None:
    assert destination(CONFIG, dead_letter(origin="iot-images")).topic == "iot-images"
    without_origin = dead_letter(topic="iot-predictions-dlq", origin=None)
    assert destination(CONFIG, without_origin).topic == "iot-predictions"


@pytest.mark.parametrize(
    ("letter", "why"),
    [
        (dead_letter(replays=MAX_REPLAYS), f"the limit is {MAX_REPLAYS}"),
        (dead_letter(origin="iot-images-dlq"), "not an input topic"),
        (dead_letter(topic="somewhere-else", origin=None), "has no source"),
        (DeadLetter.from_record(record([("ce_id", b"big")])._replace(value=None)), "value is missing"),
    ],
    ids=["replayed too often", "origin is not an input", "no origin", "record not kept"],
)
def test_a_dead_letter_that_must_not_be_replayed_is_refused_with_the_reason(letter: DeadLetter, why: str) -> None:
    refused = destination(CONFIG, letter)
    assert refused.topic is None
    assert why in (refused.refusal or "")


@dataclass
class FakeFuture:
    exception: Exception | None = None

    def succeeded(self) -> bool:
        return self.exception is None

    def failed(self) -> bool:
        return self.exception is not None


@dataclass
class FakeProducer:
    refuse_topic: str | None = None
    sent: list[tuple] = field(default_factory=list)
    flushed: bool = False
    closed: bool = False

    def send(self, topic, *, key, value, headers) -> FakeFuture:
        self.sent.append((topic, key, value, headers))
        return FakeFuture(RuntimeError("broker said no") if topic == self.refuse_topic else None)

    def flush(self) -> None:
        self.flushed = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def producer(monkeypatch) -> FakeProducer:
    fake = FakeProducer()
    monkeypatch.setattr(dead_letters.kafka_clients, "producer", lambda config: fake)
    return fake


def test_replay_sends_the_original_record_to_its_origin_and_waits_for_every_acknowledgement(producer) -> None:
    letter = dead_letter(image_id="a")
    results = replay(CONFIG, [letter, dead_letter(image_id="b", replays=MAX_REPLAYS)])
    assert [(result.dead_letter.id, result.topic, result.refusal is None) for result in results] == [
        ("a", "iot-images", True),
        ("b", None, False),
    ]
    assert producer.sent == [("iot-images", b"camera-1", b"not an image", replay_headers(letter))]
    assert producer.flushed and producer.closed


def test_a_replay_that_kafka_does_not_acknowledge_is_reported_as_not_replayed(producer) -> None:
    producer.refuse_topic = "iot-predictions"
    prediction = dead_letter(image_id="b", topic="iot-predictions-dlq", origin="iot-predictions")
    results = replay(CONFIG, [dead_letter(image_id="a"), prediction])
    assert results[0].refusal is None
    assert "not acknowledged by Kafka" in (results[1].refusal or "")


def test_a_dry_run_sends_nothing(producer) -> None:
    results = replay(CONFIG, [dead_letter()], dry_run=True)
    assert results[0].topic == "iot-images"
    assert producer.sent == []


@given(text=st.text(), limit=st.integers(min_value=1, max_value=200))
def test_printed_text_is_bounded_and_holds_no_control_characters(text: str, limit: int) -> None:
    shown = printable(text, limit)
    assert len(shown) <= limit
    assert not any(unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") for c in shown)


def test_the_table_escapes_a_hostile_reason_and_names_the_examples() -> None:
    letters = [dead_letter("\x1b[2Jcleared\nforged line\u202e", image_id=f"id-{n}", offset=n) for n in range(5)]
    lines = list(table(summarize(letters), limit=20))
    assert "\\x1b[2Jcleared\\nforged line\\u202e" in lines[1]
    assert "e.g. id-0, id-1, id-2" in lines[2]
    assert lines[-1] == "total: 5 dead letters (iot-images-dlq 5), 1 reasons"


def test_the_table_says_how_many_reasons_the_limit_hid() -> None:
    letters = [dead_letter(f"reason {n}", image_id=f"id-{n}", offset=n) for n in range(4)]
    assert list(table(summarize(letters), limit=1))[-1] == "3 less frequent reasons not shown (--limit)"


def test_the_replay_report_says_what_went_where_and_why_the_rest_did_not(producer) -> None:
    results = replay(CONFIG, [dead_letter(image_id="a"), dead_letter(image_id="b", replays=MAX_REPLAYS)])
    lines = list(report(results, missing=["zzz"], dry_run=False))
    assert lines[0] == "replayed 1 of 2 selected dead letters"
    assert lines[1].startswith(f"  a -> iot-images as replay 1 of {MAX_REPLAYS}")
    assert lines[2:4] == [
        "refused 1:",
        f"  b: replayed {MAX_REPLAYS} times already and failed each time (the limit is 3)",
    ]
    assert lines[4] == "no dead letter has the id(s): zzz"


def test_since_reads_iso_times_as_utc_unless_they_name_a_zone() -> None:
    assert since("2026-01-01T00:00:00") == since("2026-01-01T00:00:00Z") == since("2026-01-01T01:00:00+01:00")


def test_replay_needs_exactly_one_selection() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlq", "replay"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlq", "replay", "--all", "--reason", "jpeg"])
    args = build_parser().parse_args(["dlq", "replay", "--id", "a", "b", "--topic", "iot-images-dlq", "--dry-run"])
    assert (args.ids, args.topics, args.dry_run) == (["a", "b"], ["iot-images-dlq"], True)
