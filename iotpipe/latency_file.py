"""A camera's latency file (``iotpipe produce --latency-file``): one line per image it sent, in order.

Tab-separated after one ``#`` header line: the image id, when it was sent and when its result came
back (Unix seconds), and the latency in seconds; an image not answered in time has ``lost`` in
the last two columns. Written by the camera (producer/fleet.py); read by the load test's analysis
(loadtest/latency_files.py), the cluster test (cluster/e2e.py) and the fault tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LOST = "lost"
COLUMNS = ("image_id", "sent_unix_s", "received_unix_s", "latency_s")
HEADER = "# " + "\t".join(COLUMNS) + f" ({LOST}: not answered in time)"


@dataclass(frozen=True)
class SentImage:
    """One line: an image, when it was sent, and how long its answer took (None: lost)."""

    image_id: str
    sent_s: float
    latency_s: float | None = None

    @property
    def received_s(self) -> float | None:
        return None if self.latency_s is None else self.sent_s + self.latency_s

    def line(self) -> str:
        if self.latency_s is None:
            return f"{self.image_id}\t{self.sent_s:.6f}\t{LOST}\t{LOST}"
        return f"{self.image_id}\t{self.sent_s:.6f}\t{self.received_s:.6f}\t{self.latency_s:.6f}"


def write(path: Path, images: Iterable[SentImage]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in (HEADER, *(image.line() for image in images))))


def read(path: Path) -> list[SentImage]:
    """The images of the file at ``path``; ValueError naming the file and line of one that is not an image's."""
    return parse(path.read_text(), str(path))


def parse(text: str, where: str = "latency file") -> list[SentImage]:
    """The images of a latency file's text."""
    return [parse_line(line, f"{where}:{number}") for number, line in content_lines(text)]


def content_lines(text: str) -> list[tuple[int, str]]:
    """(number, line) of each line that is neither blank nor a ``#`` comment."""
    lines = enumerate(text.splitlines(), start=1)
    return [(number, line) for number, line in lines if line.strip() and not line.startswith("#")]


def parse_line(line: str, where: str) -> SentImage:
    """One image's line; ValueError starting with ``where`` (file:line) for anything else."""
    columns = line.split("\t")
    if len(columns) != len(COLUMNS):
        raise ValueError(
            f"{where}: {len(columns)} tab-separated columns, expected {len(COLUMNS)} ({', '.join(COLUMNS)}); "
            "is this a latency file of `iotpipe produce --latency-file`?"
        )
    image_id, sent, received, latency = columns
    if not image_id:
        raise ValueError(f"{where}: no image id in the first column")
    sent_s = _seconds(sent, where)
    if (received == LOST) != (latency == LOST):
        raise ValueError(f"{where}: received {received!r} and latency {latency!r}: either both are {LOST!r} or neither")
    if latency == LOST:
        return SentImage(image_id, sent_s)
    _seconds(received, where)
    return SentImage(image_id, sent_s, _seconds(latency, where))


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is neither a time in seconds nor {LOST!r}")
    return value
