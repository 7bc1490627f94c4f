"""A poison soak on the real stack: generated bad records interleaved with good images from several cameras.

Hostile records go to both topics while three cameras send good images: broken and mutated images,
images the decoder refuses deep inside Pillow, oversize values, ids CouchDB would refuse, broken
CloudEvents headers, predictions with wrong field types, and an image id re-used for another image.
Every good image must be stored exactly once and answered, every record known to be bad must be in
its dead-letter topic with a reason and its original headers, every ambiguous (mutated) record must
end in exactly one of the two, and no service may have been restarted. The longest stall in the
cameras' answers is printed (target: under 5 s). The soak runs on each model server: every good image
gets its checkpoint's offline label, and an image the model server cannot decode is dead-lettered with
the reason handlers/ gives it, which TorchServe's handler and MLServer's runtime both answer.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from kafka import TopicPartition
from PIL import Image

from bridges.bridge import Inference
from handlers.images import BadImage, preprocess_bytes
from iotpipe import couch, kafka_clients
from iotpipe.config import Config
from iotpipe.wire import (
    PREDICTION_HEADER,
    REASON_HEADER,
    STAGE_HEADER,
    ImageEvent,
    Prediction,
    WireError,
    cut,
    decode_headers,
    max_image_bytes,
    now_iso,
)
from producer import Producer
from stack import Stack
from tests.conftest import on_model_servers
from tests.faults.test_faults import answer_times, labels_unlike_offline, longest_gap_s
from tests.integration.helpers import unique_producer_id, wait_for_documents
from tests.unit.test_wire import version_1_record

CAMERAS = 3
IMAGES_PER_CAMERA = 200
RATE = 20  # images per second per camera: the soak lasts about 10 s
CASE_HEADER = "soak-case"  # every hostile record carries its case name, kept by its dead letter
STALL_TARGET_S = 5.0
MODEL_SERVER_STAGE = f"{Inference.service}:{Inference.stage}"  # the dead letters whose reason the model server gave


@dataclass
class Hostile:
    """A record sent on purpose; ``bad`` is None when it may be stored or dead-lettered (a mutation)."""

    case: str
    topic: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    bad: bool | None = True
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)

    def send(self, producer) -> None:
        headers = [*self.headers, (CASE_HEADER, f"{self.case}/{self.tag}".encode())]
        producer.send(self.topic, key=self.key, value=self.value, headers=headers)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunk_before_data(chunk: bytes) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", (32, 32), (40, 90, 200)).save(encoded, format="PNG")
    png = encoded.getvalue()
    data_at = png.index(b"IDAT") - 4
    return png[:data_at] + chunk + png[data_at:]


def declared_size_png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def image_records(config: Config, source: str, jpeg: bytes, rng: random.Random) -> list[Hostile]:
    """Bad and mutated records for iot-images, each a CloudEvent unless the case breaks its headers."""

    def event(data: bytes, content_type: str = "image/jpeg", **changes) -> tuple[bytes, bytes, list]:
        key, value, headers = ImageEvent(source=source, data=data, content_type=content_type).to_record()
        named = dict(headers)
        for name, replacement in changes.items():
            if replacement is None:
                named.pop(name, None)
            else:
                named[name] = replacement
        return key, value, list(named.items())

    def hostile(case: str, record: tuple[bytes, bytes, list], bad: bool | None = True) -> Hostile:
        return Hostile(case, config.images_topic, *record, bad=bad)

    oversize = max_image_bytes(config.max_request_size) + 1000
    # A text chunk that decompresses past Pillow's limit: Pillow raises ValueError while opening it.
    text_bomb = png_with_chunk_before_data(png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(3_000_000))))
    cases = [
        hostile("text", event(b"this is not an image at all")),
        hostile("truncated", event(jpeg[: len(jpeg) // 2])),
        hostile("empty", event(b"")),
        hostile("png-text-bomb", event(text_bomb, "image/png")),
        hostile("declared-30000x30000", event(declared_size_png(30000, 30000), "image/png")),
        hostile("oversize", event(jpeg + bytes(oversize - len(jpeg)))),
        hostile("gif-type", event(jpeg, "image/gif")),
        hostile("id-underscore", event(jpeg, ce_id=b"_design/evil")),
        hostile("id-control", event(jpeg, ce_id=b"id\x00with\nnul")),
        hostile("id-long", event(jpeg, ce_id=b"x" * 5000)),
        hostile("source-underscore", event(jpeg, ce_source=b"_users")),
        hostile("no-id", event(jpeg, ce_id=None)),
        hostile("no-specversion", event(jpeg, ce_specversion=None)),
        hostile("wrong-type", event(jpeg, ce_type=b"org.example.other")),
        hostile("bad-time", event(jpeg, ce_time=b"yesterday")),
        hostile("non-utf8-header", event(jpeg, ce_subject=b"\xff\xfe\xfd")),
        hostile("huge-subject", event(jpeg, ce_subject=b"s" * 100_000)),
    ]
    for index in range(12):  # mutated real images: flipped bytes may still decode, so either outcome is fine
        mutated = bytearray(jpeg)
        for _ in range(rng.randint(1, 20)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(hostile(f"mutated-{index}", event(bytes(mutated)), bad=None))
    # Legal, though at the very limit: a JPEG padded after its end marker up to the largest image accepted.
    largest = jpeg + bytes(max_image_bytes(config.max_request_size) - len(jpeg))
    cases.append(hostile("largest-legal", event(largest), bad=False))
    return cases


def prediction_records(config: Config, source: str, jpeg: bytes) -> list[Hostile]:
    """Bad records for iot-predictions: valid CloudEvents headers around broken or ill-typed predictions.

    Both formats: the current one (the result in the ``ce_prediction`` header) and version 1 (the
    whole prediction as a JSON value), which an older bridge still writes during an upgrade.
    """

    def good() -> Prediction:
        return Prediction(
            id=uuid.uuid4().hex, producer_id=source, subject="soak/x.jpg", ground_truth="cat", label="cat",
            scores={"cat": 0.9, "dog": 0.05, "frog": 0.05}, model="cifar10-resnet", model_version="20.1",
            sent_at=now_iso(), received_at=now_iso(), inferred_at=now_iso(), content_type="image/jpeg", image=jpeg,
        )  # fmt: skip

    def changed(body: dict, changes: dict) -> bytes:
        for name, replacement in changes.items():
            if replacement is ...:
                body.pop(name)
            else:
                body[name] = replacement
        return json.dumps(body).encode()

    def prediction(**changes) -> tuple[bytes, bytes, list]:
        key, value, headers = good().to_record()
        result = json.loads(decode_headers(headers)[PREDICTION_HEADER])
        kept = [(name, raw) for name, raw in headers if name != PREDICTION_HEADER]
        return key, value, [*kept, (PREDICTION_HEADER, changed(result, changes))]

    def version_1(**changes) -> tuple[bytes, bytes, list]:
        key, value, headers = version_1_record(good())
        return key, changed(json.loads(value), changes), headers

    def with_header(record: tuple[bytes, bytes, list], name: str, value: bytes) -> tuple[bytes, bytes, list]:
        key, body, headers = record
        return key, body, [(n, v) for n, v in headers if n != name] + [(name, value)]

    def hostile(case: str, record: tuple[bytes, bytes, list], bad: bool = True) -> Hostile:
        return Hostile(case, config.predictions_topic, *record, bad=bad)

    return [
        hostile("result-not-json", with_header(prediction(), PREDICTION_HEADER, b"{not json")),
        hostile("label-int", prediction(label=7)),
        hostile("scores-list", prediction(scores=[0.9, 0.1])),
        hostile("scores-nan", prediction(scores={"cat": "NaN"})),
        hostile("missing-label", prediction(label=...)),
        hostile("id-underscore", prediction(id="_all_docs")),
        hostile("content-type-html", with_header(prediction(), "content-type", b"text/html")),
        hostile("sent-at-garbage", prediction(sent_at="not a time")),
        hostile("no-image", (source.encode(), b"", prediction()[2])),
        hostile("extra-field", prediction(from_a_newer_bridge={"hello": 1}), bad=False),  # forward compatible
        hostile("v1-not-json", (source.encode(), b"{not json", version_1()[2])),
        hostile("v1-image-not-base64", version_1(image="!!!")),
        hostile("v1-label-int", version_1(label=7)),
        hostile("v1-from-an-older-bridge", version_1(), bad=False),  # stored during an upgrade
    ]


def dead_letters_by_case(config: Config, cases: set[str], timeout_s: float = 60) -> dict[str, dict[str, str]]:
    """{case/tag: headers} of the hostile records found in either dead-letter topic."""
    consumer = kafka_clients.consumer(config, group_id=None)
    topics = (config.dead_letter_topic, config.predictions_dead_letter_topic)
    consumer.assign([TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()])
    consumer.seek_to_beginning()
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not cases <= set(found) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    case = dict(record.headers or []).get(CASE_HEADER, b"").decode()
                    if case in cases:
                        found[case] = {name: value.decode(errors="replace") for name, value in record.headers}
    finally:
        consumer.close()
    return found


def service_pids(config: Config) -> dict[str, int | None]:
    return {service.name: service.pid() for service in Stack(config).services}


def undecodable_by_handler(config: Config, record: Hostile) -> str | None:
    """The dead letter's reason for an iot-images record that passes the bridge's wire checks and that handlers/
    cannot decode (the model server's answer, on TorchServe as on MLServer); None for any other record."""
    try:
        event = ImageEvent.from_record(record.value, record.headers, max_bytes=max_image_bytes(config.max_request_size))
        preprocess_bytes(event.data)
    except WireError:
        return None
    except BadImage as refused:
        return cut(str(refused))
    return None


@on_model_servers()
def test_poison_records_cost_only_themselves(stack: Config, images, tmp_path: Path) -> None:
    rng = random.Random(10)
    hostile_source = unique_producer_id("hostile")
    jpeg = images[3].read()
    hostile = image_records(stack, hostile_source, jpeg, rng) + prediction_records(stack, hostile_source, jpeg)
    rng.shuffle(hostile)
    pids_before = service_pids(stack)

    cameras = [unique_producer_id(f"soak{n}") for n in range(CAMERAS)]
    reports: dict[str, object] = {}

    def run_camera(index: int, producer_id: str) -> None:
        chosen = images[index * IMAGES_PER_CAMERA :][:IMAGES_PER_CAMERA]
        latency_file = tmp_path / f"{producer_id}.tsv"
        producer = Producer(stack, chosen, producer_id, count=len(chosen), rate=RATE, latency_file=latency_file)
        reports[producer_id] = producer.run()

    threads = [threading.Thread(target=run_camera, args=pair) for pair in enumerate(cameras)]
    for thread in threads:
        thread.start()
    sender = kafka_clients.producer(stack)
    for record in hostile:  # spread over the cameras' run
        time.sleep(IMAGES_PER_CAMERA / RATE * 0.8 / len(hostile))
        record.send(sender)
    sender.flush()
    sender.close()
    for thread in threads:
        thread.join()

    for producer_id in cameras:
        report = reports[producer_id]
        assert (report.sent, report.lost) == (IMAGES_PER_CAMERA, 0), f"{producer_id} lost {report.lost} images"
        documents = wait_for_documents(stack, producer_id, expected=IMAGES_PER_CAMERA)
        ids = [document["_id"] for document in documents]
        assert len(ids) == len(set(ids)) == IMAGES_PER_CAMERA, f"{producer_id}: {len(ids)} documents"
        assert labels_unlike_offline(stack, documents, images) == {}, f"{stack.model_server}'s labels are not offline's"

    tags = {f"{record.case}/{record.tag}": record for record in hostile}
    expected_dead = {tag for tag, record in tags.items() if record.bad}
    dead = dead_letters_by_case(stack, expected_dead)
    assert set(dead) >= expected_dead, f"not dead-lettered: {sorted(expected_dead - set(dead))}"
    for tag in expected_dead:
        assert dead[tag][REASON_HEADER], f"{tag} has no reason"
    kept = next(headers for tag, headers in dead.items() if tag.startswith("huge-subject/"))
    assert kept["ce_subject"] == "s" * 100_000  # the original headers are kept whole

    legal = [record for record in hostile if record.bad is False]
    mutated = {tag: record for tag, record in tags.items() if record.bad is None}
    stored, dead = settle(stack, hostile_source, legal, mutated)
    for record in legal:
        assert body_or_header_id(record) in stored, f"{record.case}: a legal record was not stored"
    for tag, record in mutated.items():  # a mutation may still decode: stored once or dead-lettered, never neither
        assert (body_or_header_id(record) in stored) != (tag in dead), f"{tag}: stored and dead-lettered, or neither"
    images_in = {tag: record for tag, record in tags.items() if record.topic == stack.images_topic}
    refused = {tag: reason for tag, record in images_in.items() if (reason := undecodable_by_handler(stack, record))}
    dead_images = dead_letters_by_case(stack, set(images_in), timeout_s=3)
    by_server = {tag: h[REASON_HEADER] for tag, h in dead_images.items() if h[STAGE_HEADER] == MODEL_SERVER_STAGE}
    assert by_server == refused, f"{stack.model_server} refuses other images, or for other reasons, than handlers/"

    assert service_pids(stack) == pids_before, "a service was restarted during the soak"
    stall = longest_gap_s(list(itertools.chain(*(answer_times(tmp_path / f"{c}.tsv") for c in cameras))))
    print(f"\npoison soak: {len(hostile)} hostile records among {CAMERAS}x{IMAGES_PER_CAMERA} good images; "
          f"{len(expected_dead)} dead-lettered with a reason; longest stall in answers {stall:.2f} s")  # fmt: skip
    assert stall < STALL_TARGET_S


def test_an_image_id_reused_for_another_image_is_a_conflict_not_a_silent_drop(stack: Config, images) -> None:
    producer_id = unique_producer_id("reuse")
    first, other = images[5], images[6]
    assert Producer(stack, [first], producer_id, count=1, rate=0).run().lost == 0
    [document] = wait_for_documents(stack, producer_id, expected=1)

    def again(image: bytes) -> Hostile:
        fields = {name: document[name] for name in ("producer_id", "subject", "ground_truth", "label", "scores")}
        fields |= {name: document[name] for name in ("model", "model_version", "sent_at", "received_at")}
        prediction = Prediction(
            id=document["_id"], **fields, inferred_at=now_iso(), content_type="image/jpeg", image=image
        )
        return Hostile("reuse", stack.predictions_topic, *prediction.to_record())

    redelivered, reused = again(first.read()), again(other.read())
    sender = kafka_clients.producer(stack)
    redelivered.send(sender)
    reused.send(sender)
    sender.flush()
    sender.close()
    dead = dead_letters_by_case(stack, {f"reuse/{reused.tag}"})
    assert "conflict" in dead[f"reuse/{reused.tag}"][REASON_HEADER]
    assert f"reuse/{redelivered.tag}" not in dead_letters_by_case(stack, {f"reuse/{redelivered.tag}"}, timeout_s=3)
    assert [d["_id"] for d in wait_for_documents(stack, producer_id, expected=1)] == [document["_id"]]


def body_or_header_id(record: Hostile) -> str | None:
    """The image id of a hostile record: the prediction's id on iot-predictions, else its ce_id header."""
    attributes = decode_headers_lenient(record.headers)
    if record.topic.endswith("predictions"):
        result = attributes.get(PREDICTION_HEADER, record.value)
        return json.loads(result)["id"]
    return attributes.get("ce_id")


def settle(
    config: Config, producer_id: str, legal: list[Hostile], mutated: dict[str, Hostile], timeout_s: float = 60
) -> tuple[set[str], dict[str, dict[str, str]]]:
    """Stored ids and dead letters once every legal record is stored and every mutation has an outcome."""
    deadline = time.monotonic() + timeout_s
    while True:
        stored = {document["_id"] for document in couch.results_of(couch.database(config), producer_id)}
        dead = dead_letters_by_case(config, set(mutated), timeout_s=3)
        settled = all(body_or_header_id(record) in stored for record in legal) and all(
            body_or_header_id(record) in stored or tag in dead for tag, record in mutated.items()
        )
        if settled or time.monotonic() > deadline:
            return stored, dead


def decode_headers_lenient(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    try:
        return decode_headers(headers)
    except ValueError:
        return {}
