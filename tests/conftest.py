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

TEST_STACK = {
    "state_dir": ROOT / ".run" / "test-stack",
    "bootstrap_servers": "127.0.0.1:19092",
    "kafka_sasl_ssl_address": "127.0.0.1:19094",
    "inference_url": "http://127.0.0.1:18080",
    "management_url": "http://127.0.0.1:18081",
    "metrics_url": "http://127.0.0.1:18082",
    "grpc_inference_port": 17070,
    "grpc_management_port": 17071,
    "bridge_metrics_port": 19101,
    "consumer_metrics_port": 19102,
    "dashboard_port": 18050,
    "couchdb_url": "http://127.0.0.1:15984",
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
    environment = {f"IOTPIPE_{name.upper()}": str(value) for name, value in TEST_STACK.items()}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # the bridge and consumer processes read the same configuration
    test_stack = Stack(config)
    test_stack.down(purge=True)
    try:
        yield test_stack.up(progress=lambda line: print(f"[test stack] {line}"))
    finally:
        test_stack.down(purge=True)
        lock.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def claim_test_stack(state_dir: Path):
    """One test session at a time owns the test stack: a second one would purge it mid-run."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = (state_dir.parent / "test-stack.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pytest.fail(f"another pytest session is using the test stack ({lock.name}); wait for it to finish")
    return lock


@pytest.fixture(scope="session")
def images(config: Config):
    from producer import image_folder

    return image_folder(config.data_dir)
