"""The wire format of the two topics, and the checks that every record passes before it is used.

``iot-images``: CloudEvents Kafka protocol binding, binary content mode. The record value is
the encoded image itself (JPEG or PNG bytes); the event's attributes are headers
(``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``, ``content-type``, and
the extensions ``ce_subject`` and ``ce_groundtruth`` when known); the key is the producer id.

``iot-predictions``: also a binary-mode CloudEvent, keyed by producer id so that each camera's
results stay in order. Its value is the image as it came (``content-type`` says which kind), and
the result (see ``Prediction``) is one small JSON object in the extension header ``ce_prediction``
(type ``org.iotpipe.prediction.v2``): no base64, no copy of the image into JSON. Records of the
previous format (``org.iotpipe.prediction.v1``: the whole prediction as a JSON value with the image
base64) are still read, so that results written by an older bridge are stored during an upgrade.

Records are validated at the edge, when read: ids must be usable as a CouchDB document id and as
one URL path segment (``check_id``), text is capped and free of control characters, every field of
a prediction is type-checked before anything is stored. Every failure is a ``WireError`` whose
message, cut to ``MAX_REASON_CHARS``, is the dead-letter reason. A prediction's unknown extra
fields are ignored, not refused: a newer bridge may add one, and an older consumer that
dead-lettered it would block a rolling upgrade.
"""

from __future__ import annotations

import base64
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol, get_args, get_type_hints

from iotpipe.image_types import CONTENT_TYPES as IMAGE_CONTENT_TYPES

SPEC_VERSION = "1.0"
IMAGE_EVENT_TYPE = "org.iotpipe.image.v1"
PREDICTION_EVENT_TYPE = "org.iotpipe.prediction.v2"
JSON_PREDICTION_EVENT_TYPE = "org.iotpipe.prediction.v1"  # written by older bridges; read, never written
PREDICTION_HEADER = "ce_prediction"
JSON_CONTENT_TYPE = "application/json"
# The content types of each kind of event that a topic carries.
IMAGE_EVENTS = {IMAGE_EVENT_TYPE: IMAGE_CONTENT_TYPES}
PREDICTION_EVENTS = {PREDICTION_EVENT_TYPE: IMAGE_CONTENT_TYPES, JSON_PREDICTION_EVENT_TYPE: (JSON_CONTENT_TYPE,)}

# Caps on what a camera or a model may put in a record. With them a prediction's fields and
# headers fit PREDICTION_OVERHEAD (tests/unit/test_wire.py checks the worst case).
MAX_ID_CHARS = 128  # image and producer ids (a UUID is 32)
MAX_TEXT_CHARS = 200  # a camera's subject (its file name) and ground truth
MAX_NAME_CHARS = 64  # class labels, model name and version
MAX_SCORES = 10
# Controls, invisible format marks (bidi overrides), lone surrogates (not encodable as UTF-8) and
# line separators: none belongs in an id or a label, and each can break a log line, a URL or JSON.
REFUSED_CHARACTER_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# RFC 3339 (upper-case T and Z), in the form datetime.fromisoformat also reads.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})", re.ASCII)

# Dead letters keep the original key, value and headers and add these (as Kafka Connect's
# errors.deadletterqueue.context.headers do): why, after how many attempts, at which stage, and
# where the record came from. A replayed record carries how often it was replayed.
DEAD_LETTER_PREFIX = "iotpipe_dlq_"
REASON_HEADER = "iotpipe_dlq_reason"
ATTEMPTS_HEADER = "iotpipe_dlq_attempts"
STAGE_HEADER = "iotpipe_dlq_stage"
ORIGIN_TOPIC_HEADER = "iotpipe_dlq_topic"
ORIGIN_PARTITION_HEADER = "iotpipe_dlq_partition"
ORIGIN_OFFSET_HEADER = "iotpipe_dlq_offset"
DEAD_LETTER_TIME_HEADER = "iotpipe_dlq_time"
REPLAYS_HEADER = "iotpipe_replays"
MAX_REASON_CHARS = 500

# Size limits, each derived from the one above it (Kafka's max_request_size), so that any record
# accepted on an input topic can be dead-lettered with its context headers, and any image
# accepted on iot-images can be published inside its prediction.
DEAD_LETTER_HEADROOM = 4096  # bytes the dead-letter headers may add to a record
PREDICTION_OVERHEAD = 8192  # bytes a prediction's fields and headers take besides the image


def input_record_limit(max_request_size: int) -> int:
    """The largest record the pipeline's input topics accept (their ``max.message.bytes``)."""
    return max_request_size - DEAD_LETTER_HEADROOM


def max_image_bytes(max_request_size: int) -> int:
    """The largest image whose prediction fits a record in either version (version 1: base64 in JSON).

    Derived from the larger, version 1 encoding, so that a bridge rolled back to it can still
    publish every image the cameras were allowed to send.
    """
    return (input_record_limit(max_request_size) - PREDICTION_OVERHEAD) * 3 // 4


Headers = list[tuple[str, bytes]]


class WireError(ValueError):
    """A record that does not follow the wire format; the message (cut) is the dead-letter reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(cut(reason))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def check_text(value: object, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` if it is a string of at most ``limit`` characters with no control character."""
    if not isinstance(value, str):
        raise WireError(f"{what} is a {type(value).__name__}, expected a string")
    if len(value) > limit:
        raise WireError(f"{what} has {len(value)} characters, more than the limit of {limit}")
    refused = next((c for c in value if unicodedata.category(c) in REFUSED_CHARACTER_CATEGORIES), None)
    if refused is not None:
        raise WireError(f"{what} contains the control character U+{ord(refused):04X}")
    return value


def check_name(value: object, what: str) -> str:
    return check_text(value, what, MAX_NAME_CHARS)


def check_id(value: object, what: str) -> str:
    """``value`` if it is usable as a CouchDB document id and as one path segment of a URL."""
    text = check_text(value, what, MAX_ID_CHARS)
    if not text:
        raise WireError(f"{what} is empty")
    if text.startswith("_"):
        raise WireError(f"{what} {text!r} starts with '_', which CouchDB reserves for its own documents")
    if "/" in text or text in (".", ".."):
        raise WireError(f"{what} {text!r} is not one URL path segment ('/', '.' and '..' are refused)")
    return text


def check_time(value: object, what: str) -> str:
    """``value`` if it is an RFC 3339 timestamp."""
    text = check_text(value, what, MAX_NAME_CHARS)
    try:
        if RFC3339.fullmatch(text):
            parse_time(text)
            return text
    except ValueError:  # a date or time out of range: 2026-02-30, 24:00
        pass
    raise WireError(f"{what} {text!r} is not an RFC 3339 timestamp")


def check_one_of(value: object, what: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise WireError(f"{what} {cut(repr(value), 80)} is not one of {', '.join(allowed)}")
    return value


def check_content_type(value: object, what: str) -> str:
    return check_one_of(value, what, IMAGE_CONTENT_TYPES)


def check_scores(value: object, what: str) -> dict[str, float]:
    """A dict of at most MAX_SCORES class names, each to a finite number."""
    if not isinstance(value, dict):
        raise WireError(f"{what} is a {type(value).__name__}, expected an object of class: score")
    if len(value) > MAX_SCORES:
        raise WireError(f"{what} has {len(value)} classes, more than the limit of {MAX_SCORES}")
    return {check_name(name, f"{what} class"): check_score(score, f"{what}[{name!r}]") for name, score in value.items()}


def check_score(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{what} is a {type(value).__name__}, expected a number")
    try:
        score = float(value)
    except OverflowError:  # an integer beyond any float, which JSON allows
        score = math.inf
    if not math.isfinite(score):
        raise WireError(f"{what} is not a finite number")
    return score


def check_base64_image(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise WireError(f"{what} is a {type(value).__name__}, expected a base64 string")
    try:
        image = base64.b64decode(value, validate=True)
    except ValueError:
        raise WireError(f"{what} is not valid base64") from None
    if not image:
        raise WireError(f"{what} is empty")
    return image


def cloudevent_attributes(headers: Headers | None, events: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """The CloudEvents attributes of a record, checked; ``events``: the content types of each event type.

    The record's other headers are not read.
    """
    attributes: dict[str, str] = {}
    for name, raw in headers or []:
        if raw is None or not (name.startswith("ce_") or name == "content-type"):
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise WireError(f"header {cut(name, 80)} is not UTF-8") from None
        if attributes.setdefault(name, text) != text:
            raise WireError(f"header {cut(name, 80)} appears twice with different values")
    if attributes.get("ce_specversion") != SPEC_VERSION:
        raise WireError(f"ce_specversion is {attributes.get('ce_specversion')!r}, expected {SPEC_VERSION!r}")
    missing = [name for name in ("ce_id", "ce_source", "ce_type", "ce_time") if not attributes.get(name)]
    if missing:
        raise WireError(f"missing CloudEvents header(s): {', '.join(missing)}")
    event_type = check_one_of(attributes["ce_type"], "ce_type", tuple(events))
    check_id(attributes["ce_id"], "ce_id")
    check_id(attributes["ce_source"], "ce_source")
    check_time(attributes["ce_time"], "ce_time")
    check_one_of(attributes.get("content-type"), "content-type", events[event_type])
    return attributes


@dataclass(frozen=True)
class ImageEvent:
    source: str
    data: bytes
    content_type: str = "image/jpeg"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = field(default_factory=now_iso)
    subject: str | None = None
    ground_truth: str | None = None

    def to_record(self) -> tuple[bytes, bytes, Headers]:
        """(key, value, headers) of the Kafka record."""
        attributes = {
            "ce_specversion": SPEC_VERSION,
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": IMAGE_EVENT_TYPE,
            "ce_time": self.time,
            "content-type": self.content_type,
            "ce_subject": self.subject,
            "ce_groundtruth": self.ground_truth,
        }
        headers = [(name, value.encode()) for name, value in attributes.items() if value is not None]
        return self.source.encode(), self.data, headers

    @classmethod
    def from_record(cls, value: bytes | None, headers: Headers | None, *, max_bytes: int | None = None) -> ImageEvent:
        """The event of an ``iot-images`` record; ``max_bytes`` is ``max_image_bytes(max_request_size)``."""
        attributes = cloudevent_attributes(headers, IMAGE_EVENTS)
        optional = {name: attributes.get(name) for name in ("ce_subject", "ce_groundtruth")}
        for name, text in optional.items():
            if text is not None:
                check_text(text, name)
        if not value:
            raise WireError("empty value: no image bytes")
        if max_bytes is not None and len(value) > max_bytes:
            raise WireError(
                f"image of {len(value)} bytes is over the limit of {max_bytes} bytes, the most whose "
                "prediction still fits a Kafka record; send a smaller (or more compressed) image"
            )
        return cls(
            source=attributes["ce_source"],
            data=bytes(value),
            content_type=attributes["content-type"],
            id=attributes["ce_id"],
            time=attributes["ce_time"],
            subject=optional["ce_subject"],
            ground_truth=optional["ce_groundtruth"],
        )


def decode_headers(headers: Headers | None) -> dict[str, str]:
    try:
        return {name: value.decode() for name, value in headers or [] if value is not None}
    except UnicodeDecodeError as error:
        raise WireError(f"header is not UTF-8: {error}") from None


class Answer(Protocol):
    """What the model server answered for one image (``bridges.clients.Labelled`` is one)."""

    label: str
    scores: dict[str, float]
    model: str
    model_version: str


@dataclass(frozen=True)
class Prediction:
    """One image's result as the bridge publishes it and the consumer stores it.

    Each field's ``check`` validates its JSON value in the ``ce_prediction`` header (or in a
    version 1 record's JSON value, which also holds the image in base64).
    """

    id: str = field(metadata={"check": check_id})
    producer_id: str = field(metadata={"check": check_id})
    subject: str | None = field(metadata={"check": check_text})
    ground_truth: str | None = field(metadata={"check": check_text})
    label: str = field(metadata={"check": check_name})
    scores: dict[str, float] = field(metadata={"check": check_scores})
    model: str = field(metadata={"check": check_name})
    model_version: str = field(metadata={"check": check_name})
    sent_at: str = field(metadata={"check": check_time})
    received_at: str = field(metadata={"check": check_time})
    inferred_at: str = field(metadata={"check": check_time})
    content_type: str = field(metadata={"check": check_content_type, "binary": True})  # the content-type header
    image: bytes = field(metadata={"check": check_base64_image, "binary": True})  # the record's value

    @classmethod
    def answering(cls, event: ImageEvent, answer: Answer, received_at: str, inferred_at: str) -> Prediction:
        """The prediction of ``event`` with the model server's ``answer``: its label, scores, model and version."""
        return cls(
            id=event.id,
            producer_id=event.source,
            subject=event.subject,
            ground_truth=event.ground_truth,
            label=answer.label,
            scores=answer.scores,
            model=answer.model,
            model_version=answer.model_version,
            sent_at=event.time,
            received_at=received_at,
            inferred_at=inferred_at,
            content_type=event.content_type,
            image=event.data,
        )

    def result(self) -> dict[str, Any]:
        """Every field but the image and its type (``RESULT_FIELDS``): the ``ce_prediction`` header's object."""
        return {name: getattr(self, name) for name in RESULT_FIELDS}

    def to_record(self) -> tuple[bytes, bytes, Headers]:
        """(key, value, headers): the image as it came, the result in the ``ce_prediction`` header."""
        result = self.result()
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", b"iotpipe-bridge"),
            ("ce_type", PREDICTION_EVENT_TYPE.encode()),
            ("ce_time", self.inferred_at.encode()),
            ("content-type", self.content_type.encode()),
            # Raw UTF-8 rather than \u escapes: a character then takes at most 4 bytes, not 12.
            (PREDICTION_HEADER, json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()),
        ]
        return self.producer_id.encode(), self.image, headers

    @classmethod
    def from_record(cls, value: bytes | None, headers: Headers | None) -> Prediction:
        """The prediction of an ``iot-predictions`` record (either version), its CloudEvents headers checked first."""
        attributes = cloudevent_attributes(headers, PREDICTION_EVENTS)
        if attributes["ce_type"] == JSON_PREDICTION_EVENT_TYPE:
            prediction = cls.from_value(value)
        else:
            prediction = cls.from_binary(value, attributes)
        if attributes["ce_id"] != prediction.id:
            raise WireError(f"ce_id {attributes['ce_id']!r} is not the prediction's id {prediction.id!r}")
        return prediction

    @classmethod
    def from_binary(cls, value: bytes | None, attributes: dict[str, str]) -> Prediction:
        """The prediction of a version 2 record: the image is the value, the rest the ``ce_prediction`` header."""
        if PREDICTION_HEADER not in attributes:
            raise WireError(f"missing CloudEvents header {PREDICTION_HEADER}")
        body = _json_object(attributes[PREDICTION_HEADER].encode(), f"header {PREDICTION_HEADER}")
        if not value:
            raise WireError("empty value: no image bytes")
        return cls(**_checked_fields(body, RESULT_FIELDS), content_type=attributes["content-type"], image=bytes(value))

    @classmethod
    def from_value(cls, value: bytes | None) -> Prediction:
        """The prediction in a version 1 record's JSON value, every field checked; unknown fields are ignored."""
        return cls(**_checked_fields(_json_object(value, "value"), [f.name for f in fields(cls)]))


_NULLABLE_FIELDS = frozenset(name for name, hint in get_type_hints(Prediction).items() if type(None) in get_args(hint))
_CHECKS = {f.name: f.metadata["check"] for f in fields(Prediction)}
RESULT_FIELDS = [f.name for f in fields(Prediction) if not f.metadata.get("binary")]


def _json_object(text: bytes | None, where: str) -> dict:
    try:
        body = json.loads(text or b"")
    except (ValueError, RecursionError) as error:
        raise WireError(f"malformed prediction: {where} is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise WireError(f"malformed prediction: {where} is a JSON {type(body).__name__}, expected an object")
    return body


def _checked_fields(body: dict, names: list[str]) -> dict[str, Any]:
    """The fields ``names`` of a prediction's JSON object, each checked; unknown fields are ignored."""
    missing = [name for name in names if name not in body]
    if missing:
        raise WireError(f"malformed prediction: missing field(s) {', '.join(missing)}")
    return {name: _checked_field(name, _CHECKS[name], body[name]) for name in names}


def _checked_field(name: str, check: Callable[[object, str], Any], value: object) -> Any:
    if value is None and name in _NULLABLE_FIELDS:
        return None
    return check(value, f"prediction field {name}")


def cut(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked as cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Origin:
    """Where a record was read: the dead letter's context."""

    topic: str
    partition: int
    offset: int


def dead_letter_headers(
    headers: Headers | None, reason: str, *, stage: str, attempts: int = 1, origin: Origin | None = None
) -> Headers:
    """Every original header, then why (cut to MAX_REASON_CHARS), how often tried, where, and when.

    Context headers from an earlier dead-lettering (a replayed record) are replaced, not repeated.
    """
    kept = [(name, value) for name, value in headers or [] if not name.startswith(DEAD_LETTER_PREFIX)]
    context = {
        REASON_HEADER: cut(reason),
        ATTEMPTS_HEADER: str(attempts),
        STAGE_HEADER: stage,
        DEAD_LETTER_TIME_HEADER: now_iso(),
    }
    if origin is not None:
        context |= {
            ORIGIN_TOPIC_HEADER: origin.topic,
            ORIGIN_PARTITION_HEADER: str(origin.partition),
            ORIGIN_OFFSET_HEADER: str(origin.offset),
        }
    return [*kept, *((name, value.encode()) for name, value in context.items())]
