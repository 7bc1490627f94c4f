"""The embedded stack on one machine: Kafka (KRaft), CouchDB API server, TorchServe, bridge, consumer.

``Stack(config).up()`` installs nothing: ``make setup`` does (Kafka jars by Maven, PouchDB Server
by npm, Python packages by pip). It starts what is not running, waits for each part to be
healthy, registers the model, creates the topics and the database, starts the supervisor that
restarts a component that dies and renews TorchServe's keys (stack.supervisor), and returns.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from iotpipe import couch
from iotpipe import kafka as kafka_helpers
from iotpipe.config import Config
from iotpipe.torchserve import KeyFileError, ManagementClient, ManagementError, bearer, key_refused
from stack.models import archive_name, build_archive, model_version
from stack.process import Liveness, Service, StackError
from stack.tls import TlsFiles, broker_lifetime, ensure_certificates

STACK_DIR = Path(__file__).resolve().parent
KAFKA_LIB = STACK_DIR / "kafka" / "lib"
POUCHDB_SERVER = STACK_DIR / "couchdb" / "node_modules" / ".bin" / "pouchdb-server"


@dataclass
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    detail: str = ""
    restarts: int = 0
    waiting: str = ""  # what the bridge or consumer waits for ("" when it is not waiting)


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


def kafka_password(config: Config) -> str:
    """The SCRAM password of the embedded broker's SASL_SSL user."""
    return generated_secret(config.kafka_secret_file)


class Stack:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = config.state_dir.resolve()
        self.kafka = self._kafka_service()
        self.couchdb = self._couchdb_service()
        self.torchserve = self._torchserve_service()
        self.bridge = self._pipeline_service("bridge")
        self.consumer = self._pipeline_service("consumer")
        self.supervisor = self._supervisor_service()
        # What starting each component means, for `iotpipe up` and for the supervisor's restarts.
        self._starters: dict[str, Callable[[], None]] = {
            "kafka": self._start_kafka,
            "couchdb": self._start_couchdb,
            "torchserve": self._start_torchserve,
            "bridge": self.bridge.start,
            "consumer": self.consumer.start,
        }

    @property
    def services(self) -> list[Service]:
        """The components, in the order they start."""
        return [self.kafka, self.couchdb, self.torchserve, self.bridge, self.consumer]

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, progress=print) -> Config:
        """Start what is not running; returns the configuration with the CouchDB credentials filled in."""
        self._check_installed()
        progress(f"torchserve: building {archive_name(self.config, self.config.model_arch)}")
        build_archive(self.config, self.config.model_arch)
        for service in self.services:
            progress(f"{service.name}: starting")
            self.start(service.name)
        progress("supervisor: starting")
        self.supervisor.start()
        progress("stack is up")
        return self.config

    def start(self, name: str) -> None:
        """Start one component as `iotpipe up` does, unless it runs; never two starts of it at once."""
        with self._service(name).lock():
            self._starters[name]()

    def restart(self, name: str) -> bool:
        """Start a component that crashed (the supervisor's call); False when it is no longer dead."""
        service = self._service(name)
        with service.lock():
            if service.liveness() is not Liveness.DEAD:  # restarted by `iotpipe up`, or stopped on purpose
                return False
            service.count_restart()
            self._starters[name]()
        return True

    def down(self, purge: bool = False) -> list[str]:
        """Stop everything, the supervisor first so that it restarts nothing that is being stopped."""
        stopped = [service.name for service in [self.supervisor, *reversed(self.services)] if service.stop()]
        if purge:
            shutil.rmtree(self.state / "data", ignore_errors=True)
            shutil.rmtree(self.state / "logs", ignore_errors=True)
            shutil.rmtree(self.state / "secrets", ignore_errors=True)
            shutil.rmtree(self.state / "kafka", ignore_errors=True)
        return stopped

    def status(self) -> list[ComponentStatus]:
        """Each component, then the supervisor."""
        return [
            ComponentStatus(
                service.name,
                running=(running := service.pid() is not None),
                healthy=service.healthy(),
                detail=self._detail(service),
                restarts=service.restarts(),
                waiting=service.waiting() if running else "",
            )
            for service in [*self.services, self.supervisor]
        ]

    def _service(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)

    def _start_kafka(self) -> None:
        self._format_kafka_storage()
        self.kafka.start()
        kafka_helpers.ensure_topics(self.config)

    def _start_couchdb(self) -> None:
        self.couchdb.start()
        self.config = self._secure_couchdb()
        couch.database(self.config, create=True)

    def _start_torchserve(self) -> None:
        """Start TorchServe and register the configured model (a fresh TorchServe has none)."""
        self._write_torchserve_config()
        self.torchserve.start()
        self._register_model()

    # -- Kafka -------------------------------------------------------------------------------

    def _kafka_service(self) -> Service:
        host, port = host_port(self.config.bootstrap_servers.split(",")[0])
        self._kafka_controller = f"{host}:{port + 1}"
        java = [
            "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
            f"-Dkafka.logs.dir={self.state / 'logs'}",
            f"-Dlog4j2.configurationFile={STACK_DIR / 'kafka' / 'log4j2.properties'}",
            "-cp", f"{KAFKA_LIB}/*",
        ]  # fmt: skip
        self._kafka_java = java
        return Service(
            name="kafka",
            command=[*java, "kafka.Kafka", str(self.state / "kafka" / "server.properties")],
            healthy=lambda: port_open(self.config.bootstrap_servers.split(",")[0]),
            state_dir=self.state,
        )

    def _format_kafka_storage(self) -> None:
        data = self.state / "data" / "kafka"
        properties = self.state / "kafka" / "server.properties"
        template = (STACK_DIR / "kafka" / "server.properties").read_text()
        properties.parent.mkdir(parents=True, exist_ok=True)
        tls = TlsFiles(self.config.kafka_tls_dir.resolve())
        ensure_certificates(tls, broker_lifetime(self.config))
        properties.write_text(
            template.format(
                broker=self.config.bootstrap_servers.split(",")[0],
                controller=self._kafka_controller,
                sasl_ssl=self.config.kafka_sasl_ssl_address,
                log_dirs=data,
                keystore=tls.keystore,
                keystore_password=tls.password(),
            )
        )
        if (data / "meta.properties").exists():
            return
        scram_user = f"SCRAM-SHA-512=[name={self.config.kafka_sasl_user},password={kafka_password(self.config)}]"
        command = [
            *self._kafka_java, "kafka.tools.StorageTool", "format", "--standalone",
            "--cluster-id", uuid.uuid4().hex[:22], "--config", str(properties), "--add-scram", scram_user,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {data} failed:\n{result.stdout}{result.stderr}")

    # -- CouchDB -----------------------------------------------------------------------------

    def _couchdb_service(self) -> Service:
        host, port = host_port(self.config.couchdb_url)
        data = self.state / "data" / "couchdb"
        return Service(
            name="couchdb",
            command=[str(POUCHDB_SERVER), "--host", host, "--port", str(port), "--dir", str(data)],
            healthy=lambda: http_ok(self.config.couchdb_url),
            state_dir=self.state,
            cwd=data,
        )

    def _secure_couchdb(self) -> Config:
        """End CouchDB's "admin party": create the admin with a password that is never committed.

        The password is IOTPIPE_COUCHDB_PASSWORD, or else a random one that this first start
        writes to the secret file (mode 0600) where every client reads it.
        """
        config = self.config
        if not config.couchdb_password:
            config = config.replace(couchdb_password=generated_secret(config.couchdb_secret_file))
        admins = requests.get(f"{config.couchdb_url}/_config/admins", timeout=10)
        if admins.ok and config.couchdb_user not in admins.json():  # admin party: anyone is admin
            created = requests.put(
                f"{config.couchdb_url}/_config/admins/{config.couchdb_user}",
                data=json.dumps(config.couchdb_password),
                timeout=10,
            )
            if not created.ok:
                raise StackError(f"could not create the CouchDB admin: {created.status_code} {created.text}")
        session = requests.get(f"{config.couchdb_url}/_session", auth=config.couchdb_credentials, timeout=10)
        if not session.ok or "_admin" not in session.json().get("userCtx", {}).get("roles", []):
            raise StackError(
                f"CouchDB at {config.couchdb_url} refuses admin {config.couchdb_user!r} with the configured password; "
                f"set IOTPIPE_COUCHDB_PASSWORD, or purge the stack to start over (`iotpipe down --purge`)"
            )
        return config

    # -- TorchServe --------------------------------------------------------------------------

    @property
    def torchserve_dir(self) -> Path:
        return self.state / "torchserve"

    def _torchserve_service(self) -> Service:
        return Service(
            name="torchserve",
            command=[
                str(Path(sys.executable).parent / "torchserve"),
                "--start",
                "--foreground",
                "--ts-config",
                str(self.torchserve_dir / "config.properties"),
                "--model-store",
                str(self.config.model_store.resolve()),
                "--no-config-snapshots",
            ],
            healthy=self._torchserve_healthy,
            state_dir=self.state,
            cwd=self.torchserve_dir,
            env={
                "LOG_LOCATION": str(self.state / "logs"),
                "METRICS_LOCATION": str(self.state / "logs"),
                # TorchServe's launcher keeps its pid file in the temp folder: one folder per stack.
                "TMPDIR": str(self.torchserve_dir),
                "OMP_NUM_THREADS": str(self.config.torch_num_threads),
            },
        )

    def _torchserve_healthy(self) -> bool:
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

    def _write_torchserve_config(self) -> None:
        template = (STACK_DIR / "torchserve" / "config.properties").read_text()
        self.torchserve_dir.mkdir(parents=True, exist_ok=True)
        (self.torchserve_dir / "config.properties").write_text(
            template.format(
                inference_address=self.config.inference_url,
                management_address=self.config.management_url,
                metrics_address=self.config.metrics_url,
                grpc_inference_port=self.config.grpc_inference_port,
                grpc_management_port=self.config.grpc_management_port,
                model_store=self.config.model_store.resolve(),
                tmpdir=self.torchserve_dir,
                token_expiration_min=self.config.torchserve_token_expiration_min,
            )
        )

    def _register_model(self) -> None:
        management = ManagementClient(self.config)
        name, version = self.config.model_name, model_version(self.config.model_arch)
        if name in management.models() and any(v.version == version for v in management.versions(name)):
            return
        try:
            management.register(archive_name(self.config, self.config.model_arch))
        except ManagementError as error:
            raise StackError(f"{error}; see {self.state / 'logs' / 'model_log.log'}") from None

    # -- bridge and consumer ----------------------------------------------------------------

    def _pipeline_service(self, name: str) -> Service:
        ready = self.state / "pids" / f"{name}.ready"
        return Service(
            name=name,
            command=[sys.executable, "-m", "iotpipe.cli", name, "--ready-file", str(ready)],
            healthy=ready.exists,
            state_dir=self.state,
            ready_file=ready,
        )

    # -- supervisor ---------------------------------------------------------------------------

    def _supervisor_service(self) -> Service:
        ready = self.state / "pids" / "supervisor.ready"
        return Service(
            name="supervisor",
            command=[sys.executable, "-m", "iotpipe.cli", "supervise", "--ready-file", str(ready)],
            healthy=ready.exists,
            state_dir=self.state,
            # Restarts must start what `iotpipe up --model-arch` started.
            env={"IOTPIPE_MODEL_ARCH": self.config.model_arch},
            ready_file=ready,
        )

    # -- status ------------------------------------------------------------------------------

    def _detail(self, service: Service) -> str:
        if service is self.kafka:
            return self.config.bootstrap_servers
        if service is self.couchdb:
            return f"{self.config.couchdb_url}/{self.config.couchdb_database}"
        if service is self.torchserve:
            return self.config.inference_url
        return str(service.log_file)

    def _check_installed(self) -> None:
        missing = []
        if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
            missing.append(f"Kafka jars in {KAFKA_LIB}")
        if not POUCHDB_SERVER.exists():
            missing.append(f"PouchDB Server in {POUCHDB_SERVER.parent}")
        if missing:
            raise StackError(f"not installed: {'; '.join(missing)}; run `make setup` first")
