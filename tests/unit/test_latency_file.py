"""A camera's latency file: what the camera writes is what the load test, the cluster test and the fault tests read."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotpipe import latency_file
from iotpipe.latency_file import SentImage

FILE = """\
# image_id\tsent_unix_s\treceived_unix_s\tlatency_s (lost: not answered in time)
a\t1700000000.000000\t1700000000.100000\t0.100000
b\t1700000000.200000\tlost\tlost
"""

# Image ids as cameras make them (uuid hex), and any others that hold no tab, line break or leading '#'.
image_ids = st.text(string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=40)
seconds = st.floats(min_value=0, max_value=4e9, allow_nan=False)
latencies = st.none() | st.floats(min_value=0, max_value=3600, allow_nan=False)


@given(st.lists(st.builds(SentImage, image_ids, seconds, latencies)))
def test_a_written_file_reads_back_to_the_same_images_in_order(images: list[SentImage]) -> None:
    read = latency_file.parse("".join(f"{line}\n" for line in (latency_file.HEADER, *(i.line() for i in images))))
    assert [image.image_id for image in read] == [image.image_id for image in images]
    for back, image in zip(read, images, strict=True):
        assert back.sent_s == pytest.approx(image.sent_s, abs=1e-6)
        if image.latency_s is None:
            assert back.latency_s is None and back.received_s is None
        else:
            assert back.latency_s == pytest.approx(image.latency_s, abs=1e-6)


def test_write_makes_the_folder_and_puts_the_header_first(tmp_path: Path) -> None:
    path = tmp_path / "results" / "camera-1.tsv"
    latency_file.write(path, [SentImage("a", 1700000000.0, 0.1), SentImage("b", 1700000000.2)])
    assert path.read_text() == FILE
    assert latency_file.read(path) == [SentImage("a", 1700000000.0, 0.1), SentImage("b", 1700000000.2)]


def test_the_image_ids_are_those_sent_in_order_answered_or_lost() -> None:
    assert [image.image_id for image in latency_file.parse(FILE)] == ["a", "b"]
    assert [image.received_s for image in latency_file.parse(FILE)] == [pytest.approx(1700000000.1), None]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("a\t1.0\t1.5", "3 tab-separated columns, expected 4"),
        ("\t1.0\t1.5\t0.5", "no image id"),
        ("a\tsoon\t1.5\t0.5", "'soon' is neither a time in seconds nor 'lost'"),
        ("a\t1.0\tlost\t0.5", "either both are 'lost' or neither"),
        ("a\t1.0\t1.5\tnan", "'nan' is neither"),
        ("a\t1.0\t\t", "'' is neither a time in seconds"),
    ],
)
def test_a_line_that_is_not_an_image_is_reported_with_its_file_and_line(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"camera-1\.tsv:4: .*{reason}"):
        latency_file.parse(f"{FILE}{line}\n", "camera-1.tsv")


@given(st.text())
def test_any_text_reads_as_images_or_raises_a_value_error_naming_the_line(text: str) -> None:
    try:
        latency_file.parse(text, "f")
    except ValueError as error:
        assert str(error).startswith("f:")
