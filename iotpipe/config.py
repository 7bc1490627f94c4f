"""One configuration object, read once at start-up from IOTPIPE_* variables and flags.

Kafka settings keep kafka-python's names (``bootstrap_servers``, ``linger_ms``,
``max_poll_records``, ``fetch_max_wait_ms``) so that its documentation applies as written.
Every field can be set as ``IOTPIPE_<FIELD>`` (upper case), e.g. ``IOTPIPE_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "IOTPIPE_"


@dataclass(frozen=True)
class Config:
    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    images_topic: str = "iot-images"
    predictions_topic: str = "iot-predictions"
    dead_letter_topic: str = "iot-images-dlq"
    predictions_dead_letter_topic: str = "iot-predictions-dlq"
    topic_partitions: int = 3
    max_request_size: int = 1_048_576
    linger_ms: int = 0
    # Large polls cost nothing at low load (a poll returns what is there) and amortize the
    # per-batch flush, commit and HTTP round trips under load: 64 -> 512 took 390 -> 600 img/s.
    max_poll_records: int = 512
    # The broker answers a fetch as soon as a record arrives, so this bounds only idle waits: a
    # short wait adds no speed, only idle round trips (10 ms cost a third of a core per client).
    fetch_max_wait_ms: int = 500
    # A crashed group member's partitions move after this long (kafka-python's default is 45 s).
    session_timeout_ms: int = 10000
    # Reconnect to a restarted broker within a second (kafka-python's default backs off to 30 s).
    reconnect_backoff_max_ms: int = 1000
    heartbeat_interval_ms: int = 3000
    bridge_group_id: str = "iotpipe-bridge"
    consumer_group_id: str = "iotpipe-consumer"
    # Kafka security (e.g. SASL_SSL with SCRAM-SHA-512 in the k8s prod overlay); PLAINTEXT on loopback here.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    # The embedded broker's SASL_SSL listener and its SCRAM user (password in .run/secrets).
    kafka_sasl_ssl_address: str = "127.0.0.1:9094"
    kafka_sasl_user: str = "iotpipe"
    # Lifetime of the embedded broker's TLS certificate (825 days, fractions allowed); the supervisor
    # issues a new one from the same CA when a third of it is left.
    kafka_certificate_expiration_min: float = 825 * 24 * 60.0
    # TorchServe
    inference_url: str = "http://127.0.0.1:8080"
    management_url: str = "http://127.0.0.1:8081"
    metrics_url: str = "http://127.0.0.1:8082"
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    model_name: str = "cifar10-resnet"
    model_arch: str = "resnet20"
    # Empty: TorchServe's default version answers (and a set-default switches the bridge live).
    model_version: str = ""
    canary_version: str = ""
    canary_share: float = 0.0
    inference_protocol: str = "torchserve"
    batch_size: int = 16
    torchserve_workers: int = 2
    max_batch_delay: int = 2
    # Intra-op threads of each TorchServe worker (OMP_NUM_THREADS). On a small machine that also
    # runs Kafka and the services, one thread is much faster than two that contend for the cores.
    torch_num_threads: int = 1
    images_per_request: int = 16
    request_timeout_s: float = 30.0
    inference_concurrency: int = 8
    torchserve_key_file: Path | None = None
    # TorchServe's API keys expire after this many minutes (fractions allowed); the embedded
    # stack and the k8s sidecar renew them through its token API well before that.
    torchserve_token_expiration_min: float = 10080.0
    # CouchDB
    couchdb_url: str = "http://127.0.0.1:5984"
    couchdb_database: str = "iot_results"
    couchdb_user: str = "admin"
    # Empty: read from couchdb_password_file, which `iotpipe up` fills with a random password.
    couchdb_password: str = field(default="", repr=False)
    couchdb_password_file: Path | None = None
    # Every CouchDB request gives up after this long (a hung server is an outage, not a freeze).
    couchdb_timeout_s: float = 30.0
    # Failures: an outage is waited out with backoff between these bounds, without end; a batch
    # that fails with no known culprit is tried this many times, then split until the failing
    # record is alone, and a record that still fails alone that many times is dead-lettered.
    attempts_before_split: int = 3
    retry_backoff_initial_s: float = 0.5
    retry_backoff_max_s: float = 10.0
    # Observability: Prometheus endpoints of the services, and the dashboard page
    metrics_bind_address: str = "127.0.0.1"  # 0.0.0.0 in a pod, so that Prometheus can scrape it
    bridge_metrics_port: int = 9101
    consumer_metrics_port: int = 9102
    dashboard_port: int = 8050
    # Assets and state
    models_dir: Path = Path("models")
    data_dir: Path = Path("data/cifar10-jpeg/test")
    model_store: Path = Path("model-store")
    state_dir: Path = Path(".run")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then IOTPIPE_* variables, then explicit overrides (flags) that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in fields(cls):
            raw = environ.get(ENV_PREFIX + setting.name.upper())
            if raw is not None:
                values[setting.name] = _parse(setting, raw)
        values.update({name: value for name, value in overrides.items() if value is not None})
        config = cls(**values)
        if not config.couchdb_password and config.couchdb_secret_file.is_file():
            config = config.replace(couchdb_password=config.couchdb_secret_file.read_text().strip())
        return config

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @property
    def couchdb_credentials(self) -> tuple[str, str] | None:
        return (self.couchdb_user, self.couchdb_password) if self.couchdb_password else None

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kafka_security(self) -> dict[str, str]:
        """The security settings kafka-python takes, those that are set."""
        settings = {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
            "ssl_cafile": self.ssl_cafile,
        }
        return {name: value for name, value in settings.items() if value}

    @property
    def couchdb_secret_file(self) -> Path:
        return self.couchdb_password_file or self.state_dir / "secrets" / "couchdb_password"

    @property
    def kafka_secret_file(self) -> Path:
        return self.state_dir / "secrets" / "kafka_password"

    @property
    def kafka_tls_dir(self) -> Path:
        return self.state_dir / "kafka" / "tls"

    @property
    def key_file(self) -> Path:
        """TorchServe writes its API keys to key_file.json in its working directory."""
        return self.torchserve_key_file or self.state_dir / "torchserve" / "key_file.json"


def _parse(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("Path"):
        return Path(raw)
    return raw
