"""MLServer of the embedded stack (IOTPIPE_MODEL_SERVER=mlserver): every ResNet checkpoint as a version of one model.

``prepare`` writes MLServer's settings.json and a model repository with one model-settings.json per
version (resnet20 is version 20.3, as its TorchServe archive), each with adaptive batching on
(IOTPIPE_BATCH_SIZE images, IOTPIPE_MAX_BATCH_DELAY ms). Unpinned requests go to MLServer's
default version, the newest one; IOTPIPE_MODEL_VERSION pins one. MLServer has no authorization:
it listens on loopback only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from iotpipe.config import MODEL_ARCHS, Config
from model_archives import checkpoint_path, model_version
from stack.component import Component, http_ok
from stack.process import Service

ROOT = Path(__file__).resolve().parents[2]  # servers.mlserver.runtime is imported from here
RUNTIME = "servers.mlserver.runtime.Cifar10Runtime"
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


def write_repository(config: Config, folder: Path) -> None:
    """settings.json, and one model-settings.json per checkpoint version under models/."""
    write_json(folder / "settings.json", server_settings(config, folder))
    for arch in MODEL_ARCHS:
        settings = model_settings(config, arch)
        write_json(folder / "models" / settings["parameters"]["version"] / "model-settings.json", settings)


def server_settings(config: Config, folder: Path) -> dict:
    """MLServer's settings.json: the stack's addresses, on loopback as every service of the stack."""
    return {
        "host": urlsplit(config.inference_url).hostname,
        "http_port": urlsplit(config.inference_url).port,
        "grpc_port": config.grpc_inference_port,
        "metrics_port": urlsplit(config.metrics_url).port,
        "metrics_dir": str(folder / "metrics"),
        "model_repository_root": str(folder / "models"),
        "debug": False,
        # Inference in the server's own process: MLServer 1.7.1's worker processes die at start with
        # uvloop 0.23 ("There is no current event loop"), and a 2 ms forward pass blocks its loop little.
        "parallel_workers": 0,
    }


def model_settings(config: Config, arch: str) -> dict:
    """One version of the model: its checkpoint, with adaptive batching as TorchServe's dynamic batching."""
    version = model_version(arch)
    return {
        "name": config.model_name,
        "implementation": RUNTIME,
        "versions": [version],
        "max_batch_size": config.batch_size,
        "max_batch_time": config.max_batch_delay / 1000,
        "parameters": {"uri": str(checkpoint_path(config, arch).resolve()), "version": version},
    }


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
