"""The embedded stack's supervisor: it restarts a component that died, as a container runtime would.

``iotpipe up`` starts it detached (``iotpipe supervise``) and ``iotpipe down`` stops it first. Once
a second it looks at each component: one whose pid file names a process that is gone (or a zombie)
crashed, and is started again the way ``iotpipe up`` starts it, after a delay that doubles with
each crash in a row (1 s to 30 s) and is forgotten once the component has run for a minute. A
component stopped on purpose (its pid file removed by ``stop()``) is left alone. Threads renew
TorchServe's keys (stack.renew_keys) and the Kafka broker's TLS certificate (stack.tls). It logs
to .run/logs/supervisor.log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from iotpipe.config import Config
from iotpipe.service import mark_ready
from stack.process import Liveness
from stack.renew_keys import KeyRenewer
from stack.tls import CertificateRenewer

log = logging.getLogger("iotpipe.supervisor")

CHECK_EVERY_S = 1.0


@dataclass
class RestartPolicy:
    """When to restart one component: exponential backoff over the crashes in a row."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    reset_after_s: float = 60.0
    crashes_in_a_row: int = 0
    dead_since: float | None = None
    running_since: float | None = None

    @property
    def delay_s(self) -> float:
        return min(self.first_delay_s * 2**self.crashes_in_a_row, self.max_delay_s)

    def should_restart(self, liveness: Liveness, now: float) -> bool:
        if liveness is Liveness.RUNNING:
            self.dead_since = None
            self.running_since = self.running_since if self.running_since is not None else now
            if now - self.running_since >= self.reset_after_s:
                self.crashes_in_a_row = 0
            return False
        self.running_since = None
        if liveness is Liveness.STOPPED:
            self.dead_since = None
            return False
        self.dead_since = self.dead_since if self.dead_since is not None else now
        return now - self.dead_since >= self.delay_s

    def restarted(self) -> None:
        self.crashes_in_a_row += 1
        self.dead_since = None


class Component(Protocol):
    name: str

    def liveness(self) -> Liveness: ...


class Supervised(Protocol):
    """What the supervisor needs of the stack (``stack.Stack``; a fake in the unit tests)."""

    config: Config

    @property
    def services(self) -> list[Component]: ...

    def restart(self, name: str) -> bool: ...


class Supervisor:
    def __init__(
        self, stack: Supervised, ready_file: Path | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stack = stack
        self.ready_file = ready_file
        self.clock = clock
        self.policies = {service.name: RestartPolicy() for service in stack.services}
        self.stopping = threading.Event()

    def check(self) -> list[str]:
        """Look at every component once and restart the dead ones that are due; the names restarted."""
        restarted = []
        for service in self.stack.services:
            policy = self.policies[service.name]
            if policy.should_restart(service.liveness(), self.clock()) and self._restart(service.name, policy):
                restarted.append(service.name)
        return restarted

    def run(self) -> None:
        """Supervise, and renew keys and certificates in threads (a restart can take minutes), until stopping."""
        config = self.stack.config
        due = (CertificateRenewer, KeyRenewer) if config.model_server == "torchserve" else (CertificateRenewer,)
        renewers = [threading.Thread(target=renewer(config).run, args=(self.stopping,), daemon=True) for renewer in due]
        for thread in renewers:
            thread.start()
        log.info("supervising %s", ", ".join(self.policies))
        if self.ready_file:
            mark_ready(self.ready_file)
        while not self.stopping.is_set():
            self.check()
            self.stopping.wait(CHECK_EVERY_S)
        for thread in renewers:
            thread.join()
        log.info("stopped supervising")

    def _restart(self, name: str, policy: RestartPolicy) -> bool:
        log.warning("%s died; restarting it (crash %d in a row)", name, policy.crashes_in_a_row + 1)
        policy.restarted()
        try:
            restarted = self.stack.restart(name)
        except Exception as error:  # whatever a start raises, the supervisor must go on supervising
            log.error("restarting %s failed, next try in %.0f s: %s", name, policy.delay_s, error)
            return False
        if restarted:
            log.info("%s is running again", name)
        return restarted
