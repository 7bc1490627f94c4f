from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from iotpipe.config import Config
from iotpipe.wire import WireError, max_image_bytes
from producer import camera
from producer.images import MissingImages, SourceImage, cifar10_batches, image_folder, take


def test_image_folder_labels_images_by_their_class_folder(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "0001.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    images = image_folder(tmp_path)
    assert [(image.name, image.label, image.content_type) for image in images] == [
        ("cat/0001.jpg", "cat", "image/jpeg"),
        ("dog/0001.jpg", "dog", "image/jpeg"),
    ]


def test_a_missing_image_folder_names_the_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingImages, match="IOTPIPE_DATA_DIR"):
        image_folder(tmp_path / "nowhere")


def test_missing_cifar10_batches_say_how_to_get_them_offline(tmp_path: Path) -> None:
    with pytest.raises(MissingImages, match="--download"):
        cifar10_batches(tmp_path)


def test_take_cycles_through_a_short_source(tmp_path: Path) -> None:
    assert take([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]


class FakeKafkaProducer:
    """Records what the camera hands to Kafka."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: list) -> None:
        self.sent.append(value)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_image_too_large_for_its_prediction_is_refused_unsent_counted_and_logged(monkeypatch, caplog) -> None:
    config = Config(max_request_size=64 * 1024)
    limit = max_image_bytes(config.max_request_size)
    small = SourceImage("cat/small.jpg", "cat", "image/jpeg", encoded=b"\xff" * limit)
    large = SourceImage("cat/large.jpg", "cat", "image/jpeg", encoded=b"\xff" * (limit + 1))
    kafka_producer = FakeKafkaProducer()
    monkeypatch.setattr(camera.kafka, "producer", lambda config: kafka_producer)
    refused_before = REGISTRY.get_sample_value("iotpipe_producer_images_total", {"outcome": "refused"})

    producer = camera.Producer(config, [small, large], producer_id="camera-1", count=2, rate=0)
    producer._send_all()

    assert kafka_producer.sent == [small.encoded]
    report = producer._report(duration_s=1.0)
    assert (report.sent, report.refused) == (1, 1)
    assert REGISTRY.get_sample_value("iotpipe_producer_images_total", {"outcome": "refused"}) == refused_before + 1
    assert f"cat/large.jpg not sent: image of {limit + 1} bytes is over the limit of {limit} bytes" in caplog.text


def test_a_producer_id_that_couchdb_would_refuse_is_refused_at_start() -> None:
    with pytest.raises(WireError, match="--producer-id '_camera' starts with '_'"):
        camera.Producer(Config(), [], producer_id="_camera", count=0, rate=1)
