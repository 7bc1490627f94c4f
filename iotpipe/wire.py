"""The wire format of the two topics.

``iot-images``: CloudEvents Kafka protocol binding, binary content mode. The record value is
the encoded image itself (JPEG or PNG bytes); the event's attributes are headers
(``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``, ``content-type``, and
the extensions ``ce_subject`` and ``ce_groundtruth`` when known); the key is the producer id.

``iot-predictions``: also a binary-mode CloudEvent whose value is one JSON object per image
(see ``Prediction``), keyed by producer id so that each camera's results stay in order.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

SPEC_VERSION = "1.0"
IMAGE_EVENT_TYPE = "org.iotpipe.image.v1"
PREDICTION_EVENT_TYPE = "org.iotpipe.prediction.v1"
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png")
JSON_CONTENT_TYPE = "application/json"
REASON_HEADER = "iotpipe_dlq_reason"

Headers = list[tuple[str, bytes]]


class WireError(ValueError):
    """A record that does not follow the wire format; the message is the dead-letter reason."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


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
    def from_record(cls, value: bytes | None, headers: Headers) -> ImageEvent:
        attributes = decode_headers(headers)
        if attributes.get("ce_specversion") != SPEC_VERSION:
            raise WireError(f"ce_specversion is {attributes.get('ce_specversion')!r}, expected {SPEC_VERSION!r}")
        missing = [name for name in ("ce_id", "ce_source", "ce_time") if not attributes.get(name)]
        if missing:
            raise WireError(f"missing CloudEvents header(s): {', '.join(missing)}")
        try:
            parse_time(attributes["ce_time"])
        except ValueError:
            raise WireError(f"ce_time {attributes['ce_time']!r} is not an RFC 3339 timestamp") from None
        content_type = attributes.get("content-type", "")
        if content_type not in IMAGE_CONTENT_TYPES:
            raise WireError(f"content-type {content_type!r} is not one of {', '.join(IMAGE_CONTENT_TYPES)}")
        if not value:
            raise WireError("empty value: no image bytes")
        return cls(
            source=attributes["ce_source"],
            data=bytes(value),
            content_type=content_type,
            id=attributes["ce_id"],
            time=attributes["ce_time"],
            subject=attributes.get("ce_subject"),
            ground_truth=attributes.get("ce_groundtruth"),
        )


def decode_headers(headers: Headers | None) -> dict[str, str]:
    try:
        return {name: value.decode() for name, value in headers or [] if value is not None}
    except UnicodeDecodeError as error:
        raise WireError(f"header is not UTF-8: {error}") from None


@dataclass(frozen=True)
class Prediction:
    """One image's result as the bridge publishes it and the consumer stores it."""

    id: str
    producer_id: str
    subject: str | None
    ground_truth: str | None
    label: str
    scores: dict[str, float]
    model: str
    model_version: str
    sent_at: str
    received_at: str
    inferred_at: str
    content_type: str
    image: bytes

    def to_record(self) -> tuple[bytes, bytes, Headers]:
        body = asdict(self) | {"image": base64.b64encode(self.image).decode()}
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", b"iotpipe-bridge"),
            ("ce_type", PREDICTION_EVENT_TYPE.encode()),
            ("ce_time", self.inferred_at.encode()),
            ("content-type", JSON_CONTENT_TYPE.encode()),
        ]
        return self.producer_id.encode(), json.dumps(body, separators=(",", ":")).encode(), headers

    @classmethod
    def from_value(cls, value: bytes | None) -> Prediction:
        try:
            body = json.loads(value or b"")
            body["image"] = base64.b64decode(body["image"], validate=True)
            return cls(**body)
        except (ValueError, TypeError, KeyError) as error:
            raise WireError(f"malformed prediction JSON: {error!r}") from None


def dead_letter_headers(headers: Headers | None, reason: str) -> Headers:
    """The original headers plus the reason the record was set aside."""
    kept = [(name, value) for name, value in headers or [] if name != REASON_HEADER]
    return [*kept, (REASON_HEADER, reason.encode())]
