"""The embedded stack on one machine: Kafka (KRaft), CouchDB API server, a model server, bridge, consumer.

``Stack(config).up()`` installs nothing: ``make setup`` does (Kafka jars by Maven, PouchDB Server
by npm, Python packages by pip). The model server is TorchServe or MLServer (IOTPIPE_MODEL_SERVER).
It starts each component that is not running (one module each,
behind stack.component's interface), waits for it to be healthy, starts the supervisor that
restarts a component that dies and renews TorchServe's keys and the broker's certificate
(stack.supervisor), sends a burst of images through the whole pipeline (stack.warmup), and
returns. Every process it starts gets ``config``, handed over explicitly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from iotpipe.config import Config
from stack.component import Component
from stack.couchdb import CouchDB
from stack.kafka import Kafka
from stack.mlserver import MLServer
from stack.pipeline import PipelineService, application_process
from stack.process import Liveness, Service, StackError
from stack.torchserve import TorchServe
from stack.warmup import warm_up_pipeline

MODEL_SERVERS: dict[str, type[Component]] = {"torchserve": TorchServe, "mlserver": MLServer}

# What `iotpipe down --purge` removes under the state folder (the pids stay: they say what runs).
PURGED = ("data", "logs", "secrets", "kafka")


@dataclass
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    detail: str = ""
    restarts: int = 0
    waiting: str = ""  # what the bridge or consumer waits for ("" when it is not waiting)


class Stack:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = config.state_dir.resolve()
        self.kafka = Kafka(config)
        self.couchdb = CouchDB(config)
        self.model_server = MODEL_SERVERS[config.model_server](config)
        self.bridge = PipelineService(config, "bridge")
        self.consumer = PipelineService(config, "consumer")
        self.supervisor = application_process(config, "supervise", "supervisor")

    @property
    def components(self) -> list[Component]:
        """The components, in the order they start."""
        return [self.kafka, self.couchdb, self.model_server, self.bridge, self.consumer]

    @property
    def services(self) -> list[Service]:
        """The components' processes, in the order they start (what the supervisor watches)."""
        return [component.process for component in self.components]

    def up(self, progress=print) -> Config:
        """Start what is not running; returns the configuration with the CouchDB credentials filled in."""
        missing = [item for component in self.components for item in component.missing()]
        if missing:
            raise StackError(f"not installed: {'; '.join(missing)}; run `make setup` first")
        for component in self.components:
            progress(f"{component.name}: starting")
            self.start(component.name)
        progress("supervisor: starting")
        self.supervisor.start()
        progress(f"pipeline: warming up with {self.config.warmup_images} images (IOTPIPE_WARMUP_IMAGES)")
        warm_up_pipeline(self.config)
        progress("stack is up")
        return self.config.with_stored_couchdb_password()

    def start(self, name: str) -> None:
        """Start one component as `iotpipe up` does, unless it runs; never two starts of it at once."""
        component = self._component(name)
        with component.process.lock():
            component.start()

    def restart(self, name: str) -> bool:
        """Start a component that crashed (the supervisor's call); False when it is no longer dead."""
        component = self._component(name)
        with component.process.lock():
            if component.process.liveness() is not Liveness.DEAD:  # restarted by `iotpipe up`, or stopped on purpose
                return False
            component.process.count_restart()
            component.start()
        return True

    def down(self, purge: bool = False) -> list[str]:
        """Stop everything, the supervisor first so that it restarts nothing that is being stopped."""
        stopped = [service.name for service in [self.supervisor, *reversed(self.services)] if service.stop()]
        if purge:
            for folder in PURGED:
                shutil.rmtree(self.state / folder, ignore_errors=True)
        return stopped

    def status(self) -> list[ComponentStatus]:
        """Each component, then the supervisor."""
        rows = [
            self._status(component.process, component.healthy(), component.detail()) for component in self.components
        ]
        supervisor = self.supervisor
        return [*rows, self._status(supervisor, supervisor.healthy(), str(supervisor.log_file))]

    @staticmethod
    def _status(process: Service, healthy: bool, detail: str) -> ComponentStatus:
        running = process.pid() is not None
        return ComponentStatus(
            process.name,
            running=running,
            healthy=healthy,
            detail=detail,
            restarts=process.restarts(),
            waiting=process.waiting() if running else "",
        )

    def _component(self, name: str) -> Component:
        return next(component for component in self.components if component.name == name)
