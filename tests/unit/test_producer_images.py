from pathlib import Path

import pytest

from iotpipe.image_types import IMAGE_TYPES
from producer.images import MissingImages, cifar10_batches, image_folder, take


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


def test_image_folder_reads_every_accepted_image_type_by_its_suffix(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    for kind in IMAGE_TYPES:
        for suffix in kind.suffixes:
            (tmp_path / "cat" / f"0001{suffix.upper()}").write_bytes(b"")
    found = {Path(image.name).suffix.lower(): image.content_type for image in image_folder(tmp_path)}
    assert found == {suffix: kind.content_type for kind in IMAGE_TYPES for suffix in kind.suffixes}


def test_a_missing_image_folder_names_the_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingImages, match="IOTPIPE_DATA_DIR"):
        image_folder(tmp_path / "nowhere")


def test_missing_cifar10_batches_say_how_to_get_them_offline(tmp_path: Path) -> None:
    with pytest.raises(MissingImages, match="--download"):
        cifar10_batches(tmp_path)


def test_take_cycles_through_a_short_source(tmp_path: Path) -> None:
    assert take([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
