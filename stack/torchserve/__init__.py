"""TorchServe of the embedded stack, with the configured model registered (a fresh TorchServe has none).

Beside this module: config.properties, filled in from the configuration at every start. Token
authorization stays on: TorchServe writes its keys to key_file.json in its working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from iotpipe.config import Config
from iotpipe.torchserve import KeyFileError, ManagementClient, ManagementError, bearer, key_refused
from model_archives import archive_name, build_archive, model_version
from stack.component import JVM_COMPILE_SOONER, Component
from stack.process import Service, StackError

HERE = Path(__file__).resolve().parent


class TorchServe(Component):
    name = "torchserve"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.folder = self.state / "torchserve"
        self.process = Service(
            name=self.name,
            command=[
                str(Path(sys.executable).parent / "torchserve"),
                "--start",
                "--foreground",
                "--ts-config",
                str(self.folder / "config.properties"),
                "--model-store",
                str(config.model_store.resolve()),
                "--no-config-snapshots",
            ],
            healthy=self.healthy,
            state_dir=self.state,
            cwd=self.folder,
            env={
                "LOG_LOCATION": str(self.state / "logs"),
                "METRICS_LOCATION": str(self.state / "logs"),
                # TorchServe's launcher keeps its pid file in the temp folder: one folder per stack.
                "TMPDIR": str(self.folder),
                "OMP_NUM_THREADS": str(config.torch_num_threads),
            },
        )

    def prepare(self) -> None:
        """The configured model's archive, and config.properties."""
        build_archive(self.config, self.config.model_arch)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.properties").write_text(
            (HERE / "config.properties")
            .read_text()
            .format(
                inference_address=self.config.inference_url,
                management_address=self.config.management_url,
                metrics_address=self.config.metrics_url,
                grpc_inference_port=self.config.grpc_inference_port,
                grpc_management_port=self.config.grpc_management_port,
                model_store=self.config.model_store.resolve(),
                tmpdir=self.folder,
                jvm_compile_sooner=JVM_COMPILE_SOONER,
                token_expiration_min=self.config.torchserve_token_expiration_min,
            )
        )

    def start(self) -> None:
        super().start()
        self._register_model()

    def _register_model(self) -> None:
        management = ManagementClient(self.config)
        name, version = self.config.model_name, model_version(self.config.model_arch)
        if name in management.models() and any(v.version == version for v in management.versions(name)):
            return
        try:
            management.register(archive_name(self.config, self.config.model_arch))
        except ManagementError as error:
            raise StackError(f"{error}; see {self.state / 'logs' / 'model_log.log'}") from None

    def healthy(self) -> bool:
        """/ping answered with the inference key of key_file.json, read again after a renewal."""
        for _ in range(2):  # a renewal between reading the key and the answer refuses it once
            try:
                response = requests.get(
                    f"{self.config.inference_url}/ping", headers=bearer(self.config.key_file, "inference"), timeout=2
                )
            except (KeyFileError, requests.RequestException):
                return False
            if not key_refused(response):
                return response.ok
        return False

    def detail(self) -> str:
        return self.config.inference_url
