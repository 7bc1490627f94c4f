"""TorchServe's keys expire every minute on the test stack (conftest), and nothing notices.

Images flow for longer than two key lifetimes: the supervisor renews the keys through TorchServe's
token API before they expire, the bridge picks the new key up, no image is lost or stored twice, and
the management API (`iotpipe models list`) still answers at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from iotpipe.config import Config
from iotpipe.torchserve import KeyFileError, read_keys
from producer import Producer
from stack import Stack
from tests.faults.test_faults import answer_times, longest_gap_s
from tests.integration.helpers import unique_producer_id, wait_for_documents

LIFETIMES = 2.5
RATE = 2


def watch_inference_keys(config: Config, stopping: threading.Event) -> list[str]:
    """Every inference key that key_file.json held, in order, until stopping."""
    seen: list[str] = []

    def watch() -> None:
        while not stopping.wait(0.2):
            try:
                key = read_keys(config.key_file)["inference"]["key"]
            except KeyFileError:
                continue
            if not seen or seen[-1] != key:
                seen.append(key)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def test_images_flow_across_key_expiries_with_nothing_lost_and_each_stored_once(
    stack: Config, images, tmp_path: Path
) -> None:
    assert stack.torchserve_token_expiration_min == 1.0
    count = int(LIFETIMES * 60 * stack.torchserve_token_expiration_min * RATE)
    torchserve_pid = Stack(stack).model_server.process.pid()
    stopping = threading.Event()
    keys = watch_inference_keys(stack, stopping)
    producer_id = unique_producer_id("keys")
    latency_file = tmp_path / "latency.tsv"
    producer = Producer(stack, images, producer_id, count=count, rate=RATE, latency_file=latency_file, timeout_s=60)
    report = producer.run()
    stopping.set()
    stall = longest_gap_s(answer_times(latency_file))
    print(
        f"\nkey expiry: {count} images over {count / RATE:.0f} s, {report.lost} lost, inference key renewed "
        f"{len(keys) - 1} times, longest gap between answers {stall:.2f} s (one image every {1 / RATE:.1f} s)"
    )

    assert (report.sent, report.lost) == (count, 0)
    ids = [document["_id"] for document in wait_for_documents(stack, producer_id, expected=count)]
    assert len(ids) == len(set(ids)) == count
    assert len(keys) >= 3, f"the inference key changed {len(keys) - 1} time(s) in {count / RATE:.0f} s"
    assert Stack(stack).model_server.process.pid() == torchserve_pid, "the keys were renewed by restarting TorchServe"
    # The management key of the start expired long ago: `iotpipe models list` needs the renewed one.
    listed = subprocess.run(
        [sys.executable, "-m", "app", "models", "list"],
        env=os.environ | stack.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert stack.model_name in listed.stdout
