"""``python -m servers.mlserver.repository FOLDER MODELS_DIR``: MLServer's settings and model repository for an image.

The files the embedded stack writes too (stack/mlserver); here for the image's paths: listening on
every interface with the ports MLServer documents (8080 HTTP, 8081 gRPC, 8082 metrics).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from iotpipe.config import MODEL_ARCHS, Config
from model_archives import checkpoint_path, model_version

RUNTIME = "servers.mlserver.runtime.Cifar10Runtime"


def main(argv: list[str]) -> int:
    folder, models_dir = map(Path, argv)
    config = Config(
        models_dir=models_dir,
        inference_url="http://0.0.0.0:8080",
        grpc_inference_port=8081,
        metrics_url="http://0.0.0.0:8082",
        model_server="mlserver",
        inference_protocol="open-inference",
    )
    write_repository(config, folder)
    return 0


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
