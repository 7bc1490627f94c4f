"""What every component of the embedded stack is to `iotpipe up`, `status` and the supervisor.

A component is one module (stack/kafka, stack/couchdb, stack/torchserve, stack/pipeline.py) with
its files beside it. Swapping one server for another, or adding one, is one such module and a
line in ``Stack.components``.
"""

from __future__ import annotations

import secrets
import socket
from abc import ABC, abstractmethod
from pathlib import Path

import requests

from iotpipe.config import Config
from stack.process import Service

# HotSpot compiles a method after a tenth of its usual calls, so that Kafka's and TorchServe's JVMs reach compiled
# speed within `iotpipe up`'s warm-up rather than a minute or more into the load (README, Load test and performance).
JVM_COMPILE_SOONER = "-XX:CompileThresholdScaling=0.1"


class Component(ABC):
    """One background process of the stack and what its start needs besides the process."""

    name: str
    process: Service

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = config.state_dir.resolve()

    def missing(self) -> list[str]:
        """What `make setup` installs for this component and is not there."""
        return []

    def prepare(self) -> None:  # noqa: B027 (a component that needs no files keeps this)
        """Write what the process reads when it starts (configuration, certificates, storage)."""

    def start(self) -> None:
        """Start the process unless it runs, and wait until it is healthy; subclasses add what a fresh start needs."""
        self.prepare()
        self.process.start()

    @abstractmethod
    def healthy(self) -> bool: ...

    def detail(self) -> str:
        """Where to look at it, for `iotpipe status`."""
        return str(self.process.log_file)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.removeprefix("http://").removeprefix("https://"), int(port)


def port_open(address: str) -> bool:
    try:
        with socket.create_connection(host_port(address), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str, **kwargs) -> bool:
    try:
        return requests.get(url, timeout=2, **kwargs).ok
    except requests.RequestException:
        return False


def generated_secret(path: Path) -> str:
    """The password kept in ``path`` (mode 0600), made at random on first use; never committed."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text()
