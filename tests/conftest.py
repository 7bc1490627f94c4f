"""One embedded stack per test session, started and stopped through the same code as `iotpipe up/down`.

The test stack has its own state folder and ports (10000 above the defaults), so a stack that a
user runs on this machine is neither used nor disturbed. Integration tests take the fixture
``stack``: the ``Config`` of the running test stack. A test that must hold on every model server is
marked ``@on_model_servers()``: the stack then switches its model server (and the bridge and the
supervisor, which know it) for each run of that test.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import get_args

import pytest

from iotpipe.config import Config, ModelServer
from loadtest.servers import server_config

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

MODEL_SERVERS: tuple[str, ...] = get_args(ModelServer)


def on_model_servers(servers: Sequence = MODEL_SERVERS, argnames: str = "stack") -> pytest.MarkDecorator:
    """Run a test once on each of ``servers``, the ``stack`` fixture switched to it, the server in the test's id;
    with more ``argnames`` ("stack,component"), once per row (model server, component).

    Grouped by server within its module only (scope="module"): pytest would otherwise move these tests ahead
    of the rest of the session to group them, and later tests would meet dead letters and documents they
    never met before (the poison soak's records that break UTF-8 among them).
    """
    return pytest.mark.parametrize(argnames, servers, indirect=["stack"], scope="module")


def on_model_server(config: Config, model_server: str) -> Config:
    """The test stack's configuration on ``model_server``: as started on its own server (TorchServe's default
    version unpinned, which test_models switches), else with the protocol that server speaks and the started
    model's version pinned (MLServer's unpinned default is its newest version)."""
    return config if model_server == config.model_server else server_config(config, model_server)


@pytest.fixture(scope="session")
def config() -> Config:
    """The test configuration: IOTPIPE_* variables for the assets, test ports and state folder."""
    return Config.load(**TEST_STACK)


@pytest.fixture(scope="session")
def running_stack(config: Config) -> Iterator[RunningStack]:
    """The session's running stack; stopped and purged at the end of the session, whichever model server it is on."""
    from stack import Stack

    lock = claim_test_stack(config.state_dir)
    for variable, path in (("IOTPIPE_MODELS_DIR", config.models_dir), ("IOTPIPE_DATA_DIR", config.data_dir)):
        if not path.is_dir():
            pytest.fail(f"{variable}={path} is not a folder; `make test` sets it to ../shared when that exists")
    Stack(config).down(purge=True)
    running = RunningStack(Stack(config).up(progress=progress))  # it hands this configuration to every process
    try:
        yield running
    finally:
        Stack(running.config).down(purge=True)
        lock.close()


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, running_stack: RunningStack) -> Config:
    """The ``Config`` of the running test stack, on the model server it started with (TorchServe unless
    IOTPIPE_MODEL_SERVER says otherwise), or on each server of a test marked ``@on_model_servers()``. The stack
    switches servers only when the next test needs the other one.
    """
    return running_stack.served_by(getattr(request, "param", running_stack.started.model_server))


class RunningStack:
    """The test stack and the model server it runs now; Kafka, CouchDB and the consumer stay up across switches."""

    def __init__(self, config: Config) -> None:
        self.started = config
        self.config = config

    def served_by(self, model_server: str) -> Config:
        """The configuration of the stack on ``model_server``, switched to it as an operator would: the supervisor,
        the bridge and the old model server stopped, then `iotpipe up` with the new configuration."""
        from stack import Stack

        wanted = on_model_server(self.started, model_server)
        if wanted != self.config:
            running = Stack(self.config)
            for service in (running.supervisor, running.bridge.process, running.model_server.process):
                service.stop()
            self.config = wanted  # before `up`: a start that fails is stopped, or switched back, as this server
            Stack(wanted).up(progress=progress)
        return self.config


def progress(line: str) -> None:
    print(f"[test stack] {line}")


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
