"""One embedded stack per test session, started and stopped through the same code as `iotpipe up/down`.

The test stack has its own state folder and ports (10000 above the defaults), so a stack that a
user runs on this machine is neither used nor disturbed. Integration tests take the fixture
``stack``: the ``Config`` of the running test stack.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from iotpipe.config import Config

ROOT = Path(__file__).resolve().parent.parent

# IOTPIPE_TEST_STACK_SLOT=N gives a test stack of its own (state folder and ports N*100 higher),
# so that two checkouts on one machine can test at once.
SLOT = int(os.environ.get("IOTPIPE_TEST_STACK_SLOT", "0"))
PORT = 10000 + 100 * SLOT

TEST_STACK = {
    "state_dir": ROOT / ".run" / ("test-stack" if SLOT == 0 else f"test-stack-{SLOT}"),
    "bootstrap_servers": f"127.0.0.1:{PORT + 9092}",
    "kafka_sasl_ssl_address": f"127.0.0.1:{PORT + 9094}",
    "inference_url": f"http://127.0.0.1:{PORT + 8080}",
    "management_url": f"http://127.0.0.1:{PORT + 8081}",
    "metrics_url": f"http://127.0.0.1:{PORT + 8082}",
    "grpc_inference_port": PORT + 7070,
    "grpc_management_port": PORT + 7071,
    "bridge_metrics_port": PORT + 9101,
    "consumer_metrics_port": PORT + 9102,
    "dashboard_port": PORT + 8050,
    "couchdb_url": f"http://127.0.0.1:{PORT + 5984}",
    # Keys that expire every minute: every test runs across renewals (test_key_expiry.py counts them).
    "torchserve_token_expiration_min": 1.0,
    # A broker certificate that lives two minutes: the SASL_SSL listener is renewed under every test
    # (test_kafka_sasl_ssl.py sends across renewals).
    "kafka_certificate_expiration_min": 2.0,
}


@pytest.fixture(scope="session")
def config() -> Config:
    """The test configuration: IOTPIPE_* variables for the assets, test ports and state folder."""
    return Config.load(**TEST_STACK)


@pytest.fixture(scope="session")
def stack(config: Config):
    from stack import Stack

    lock = claim_test_stack(config.state_dir)
    for variable, path in (("IOTPIPE_MODELS_DIR", config.models_dir), ("IOTPIPE_DATA_DIR", config.data_dir)):
        if not path.is_dir():
            pytest.fail(f"{variable}={path} is not a folder; `make test` sets it to ../shared when that exists")
    test_stack = Stack(config)  # it hands this configuration to every process it starts
    test_stack.down(purge=True)
    try:
        yield test_stack.up(progress=lambda line: print(f"[test stack] {line}"))
    finally:
        test_stack.down(purge=True)
        lock.close()


def claim_test_stack(state_dir: Path):
    """One test session at a time owns the test stack: a second one would purge it mid-run."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = (state_dir.parent / f"{state_dir.name}.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pytest.fail(f"another pytest session is using the test stack ({lock.name}); wait for it to finish")
    return lock


@pytest.fixture(scope="session")
def images(config: Config):
    from producer import image_folder

    return image_folder(config.data_dir)
