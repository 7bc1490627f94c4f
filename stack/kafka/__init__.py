"""The Kafka broker of the embedded stack: KRaft, broker and controller in one process, from Maven's jars.

Beside this module: pom.xml (the jars, `make setup`), server.properties (filled in from the
configuration at every start), log4j2.properties. Its PLAINTEXT listener is ``bootstrap_servers``,
the controller the port above it, and a SASL_SSL listener (SCRAM user, TLS from stack.tls) is
``kafka_sasl_ssl_address``.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from iotpipe import kafka_clients
from iotpipe.config import Config
from stack.component import JVM_COMPILE_SOONER, Component, generated_secret, host_port, port_open
from stack.process import Service, StackError
from stack.tls import TlsFiles, broker_lifetime, ensure_certificates

HERE = Path(__file__).resolve().parent
LIB = HERE / "lib"


def kafka_password(config: Config) -> str:
    """The SCRAM password of the embedded broker's SASL_SSL user."""
    return generated_secret(config.kafka_secret_file)


class Kafka(Component):
    name = "kafka"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.broker = config.bootstrap_servers.split(",")[0]
        host, port = host_port(self.broker)
        self.controller = f"{host}:{port + 1}"
        self.properties = self.state / "kafka" / "server.properties"
        self.data = self.state / "data" / "kafka"
        self.java = [
            "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", JVM_COMPILE_SOONER,
            f"-Dkafka.logs.dir={self.state / 'logs'}",
            f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
            "-cp", f"{LIB}/*",
        ]  # fmt: skip
        self.process = Service(
            name=self.name,
            command=[*self.java, "kafka.Kafka", str(self.properties)],
            healthy=self.healthy,
            state_dir=self.state,
        )

    def missing(self) -> list[str]:
        return [] if any(LIB.glob("kafka_2.13-*.jar")) else [f"Kafka jars in {LIB}"]

    def prepare(self) -> None:
        """Certificates, server.properties, and the storage formatted with the SCRAM user the first time."""
        tls = TlsFiles(self.config.kafka_tls_dir.resolve())
        ensure_certificates(tls, broker_lifetime(self.config))
        self.properties.parent.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(
            (HERE / "server.properties")
            .read_text()
            .format(
                broker=self.broker,
                controller=self.controller,
                sasl_ssl=self.config.kafka_sasl_ssl_address,
                log_dirs=self.data,
                keystore=tls.keystore,
                keystore_password=tls.password(),
            )
        )
        if not (self.data / "meta.properties").exists():
            self._format_storage()

    def _format_storage(self) -> None:
        scram_user = f"SCRAM-SHA-512=[name={self.config.kafka_sasl_user},password={kafka_password(self.config)}]"
        command = [
            *self.java, "kafka.tools.StorageTool", "format", "--standalone",
            "--cluster-id", uuid.uuid4().hex[:22], "--config", str(self.properties), "--add-scram", scram_user,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {self.data} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        super().start()
        kafka_clients.ensure_topics(self.config)

    def healthy(self) -> bool:
        return port_open(self.broker)

    def detail(self) -> str:
        return self.config.bootstrap_servers
