"""MLServer of the embedded stack (IOTPIPE_MODEL_SERVER=mlserver): every ResNet checkpoint as a version of one model.

``prepare`` writes (servers.mlserver.repository) MLServer's settings.json and a model repository with one
model-settings.json per version (resnet20 is version 20.3, as its TorchServe archive), each with adaptive
batching on (IOTPIPE_BATCH_SIZE images, IOTPIPE_MAX_BATCH_DELAY ms). Unpinned requests go to MLServer's
default version, the newest one; IOTPIPE_MODEL_VERSION pins one. MLServer has no authorization: it listens on
loopback only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from iotpipe.config import Config
from servers.mlserver.repository import write_repository
from stack.component import Component, http_ok
from stack.process import Service

ROOT = Path(__file__).resolve().parents[2]  # servers.mlserver.runtime is imported from here
EXECUTABLE = Path(sys.executable).parent / "mlserver"


class MLServer(Component):
    name = "mlserver"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.folder = self.state / "mlserver"
        self.process = Service(
            name=self.name,
            command=[str(EXECUTABLE), "start", str(self.folder)],
            healthy=self.healthy,
            state_dir=self.state,
            cwd=self.folder,
            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(config.torch_num_threads)},
        )

    def missing(self) -> list[str]:
        return [] if EXECUTABLE.exists() else [f"MLServer ({EXECUTABLE}; pip install mlserver)"]

    def prepare(self) -> None:
        write_repository(self.config, self.folder)

    def healthy(self) -> bool:
        """Every version loaded and ready (MLServer's readiness covers all of its models)."""
        return http_ok(f"{self.config.inference_url}/v2/health/ready")

    def detail(self) -> str:
        return self.config.inference_url
