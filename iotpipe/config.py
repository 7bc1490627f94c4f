"""One configuration object, read once at start-up from IOTPIPE_* variables and flags, validated when loaded.

Kafka settings keep kafka-python's names (``bootstrap_servers``, ``linger_ms``,
``max_poll_records``, ``fetch_max_wait_ms``) so that its documentation applies as written.
Every field can be set as ``IOTPIPE_<FIELD>`` (upper case), e.g. ``IOTPIPE_BOOTSTRAP_SERVERS``.
A process that starts another hands it its configuration as that process's IOTPIPE_* variables
(``Config.environ()``), so the child runs with exactly the parent's configuration.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

ENV_PREFIX = "IOTPIPE_"

ModelArch = Literal["resnet20", "resnet32", "resnet44", "resnet56"]
MODEL_ARCHS: tuple[str, ...] = get_args(ModelArch)
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]
InferenceProtocol = Literal["torchserve", "open-inference"]
ModelServer = Literal["torchserve", "mlserver"]
# The protocols each model server speaks, its own first.
SERVER_PROTOCOLS: dict[ModelServer, tuple[InferenceProtocol, ...]] = {
    "torchserve": ("torchserve", "open-inference"),
    "mlserver": ("open-inference",),
}


class ConfigError(ValueError):
    """Settings that cannot be used; the message names each variable and what to give instead."""


class SecretStr:
    """A secret that prints as ``**********`` in reprs, f-strings and logs; ``get_secret_value()`` is the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"


NO_SECRET = SecretStr()

# A check says what is wrong with a value, or None when it is right.
Check = Callable[[Any], str | None]


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"give at least {low}"


def above(low: float) -> Check:
    return lambda value: None if value > low else f"give more than {low}"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"give a number from {low} to {high}"


PORT = between(1, 65535)
PORT_OR_OFF = between(0, 65535)  # 0: not served at all


def _port_problem(text: str) -> str | None:
    return None if text.isdecimal() and 1 <= int(text) <= 65535 else f"port {text!r} is not from 1 to 65535"


def address(value: str) -> str | None:
    """HOST:PORT."""
    host, colon, port = value.rpartition(":")
    if not colon or not host:
        return "give HOST:PORT, e.g. 127.0.0.1:9092"
    return _port_problem(port)


def addresses(value: str) -> str | None:
    """HOST:PORT[,HOST:PORT...], as Kafka's bootstrap.servers."""
    return next(filter(None, map(address, value.split(","))), None)


def http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        return f"give an http:// or https:// URL with a port from 1 to 65535 ({error})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "give an http:// or https:// URL, e.g. http://127.0.0.1:8080"
    return None if port is None or port >= 1 else "give a port from 1 to 65535"


def setting(default: Any, *checks: Check) -> Any:
    return field(default=default, metadata={"checks": checks})


@dataclass(frozen=True)
class Config:
    # Kafka
    bootstrap_servers: str = setting("127.0.0.1:9092", addresses)
    images_topic: str = "iot-images"
    predictions_topic: str = "iot-predictions"
    dead_letter_topic: str = "iot-images-dlq"
    predictions_dead_letter_topic: str = "iot-predictions-dlq"
    topic_partitions: int = setting(3, at_least(1))
    # A dead letter carries its context in up to 4 KiB of headers (iotpipe.wire), so a record needs more room.
    max_request_size: int = setting(1_048_576, at_least(8192))
    linger_ms: int = setting(0, at_least(0))
    # Large polls cost nothing at low load (a poll returns what is there) and amortize the
    # per-batch flush, commit and HTTP round trips under load: 64 -> 512 took 390 -> 600 img/s.
    max_poll_records: int = setting(512, at_least(1))
    # The broker answers a fetch as soon as a record arrives, but kafka-python 3.0.12 can leave a
    # partition out of the next fetch (a response landing between a poll's drain and its next fetch)
    # and then waits for that fetch: every image of the left-out partitions waits this long. 500 ms
    # gave rare half-second stalls at 5 x 20/s; 100 ms bounds them for +0.03 cores idle (10 ms cost
    # a third of a core per client). README, "Load test and performance".
    fetch_max_wait_ms: int = setting(100, at_least(0))
    # A crashed group member's partitions move after this long (kafka-python's default is 45 s).
    session_timeout_ms: int = setting(10000, at_least(1))
    # Reconnect to a restarted broker within a second (kafka-python's default backs off to 30 s).
    reconnect_backoff_max_ms: int = setting(1000, at_least(0))
    heartbeat_interval_ms: int = setting(3000, at_least(1))
    bridge_group_id: str = "iotpipe-bridge"
    consumer_group_id: str = "iotpipe-consumer"
    # Kafka security (e.g. SASL_SSL with SCRAM-SHA-512 in the k8s prod overlay); PLAINTEXT on loopback here.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = ""
    sasl_plain_username: str = ""
    sasl_plain_password: SecretStr = NO_SECRET
    ssl_cafile: str = ""
    # The embedded broker's SASL_SSL listener and its SCRAM user (password in .run/secrets).
    kafka_sasl_ssl_address: str = setting("127.0.0.1:9094", address)
    kafka_sasl_user: str = "iotpipe"
    # Lifetime of the embedded broker's TLS certificate (825 days, fractions allowed); the supervisor
    # issues a new one from the same CA when a third of it is left.
    kafka_certificate_expiration_min: float = setting(825 * 24 * 60.0, above(0))
    # The model server: TorchServe, or MLServer (servers/mlserver), which speaks only the Open Inference
    # Protocol. Either one serves on inference_url, metrics_url and grpc_inference_port.
    model_server: ModelServer = "torchserve"
    # TorchServe
    inference_url: str = setting("http://127.0.0.1:8080", http_url)
    management_url: str = setting("http://127.0.0.1:8081", http_url)
    metrics_url: str = setting("http://127.0.0.1:8082", http_url)
    grpc_inference_port: int = setting(7070, PORT)
    grpc_management_port: int = setting(7071, PORT)
    model_name: str = "cifar10-resnet"
    model_arch: ModelArch = "resnet20"
    # Empty: TorchServe's default version answers (and a set-default switches the bridge live).
    model_version: str = ""
    canary_version: str = ""
    canary_share: float = setting(0.0, between(0, 1))
    inference_protocol: InferenceProtocol = "torchserve"
    batch_size: int = setting(16, at_least(1))
    torchserve_workers: int = setting(2, at_least(1))
    max_batch_delay: int = setting(2, at_least(0))
    # Intra-op threads of each TorchServe worker (OMP_NUM_THREADS). On a small machine that also
    # runs Kafka and the services, one thread is much faster than two that contend for the cores.
    torch_num_threads: int = setting(1, at_least(1))
    images_per_request: int = setting(16, at_least(1))
    request_timeout_s: float = setting(30.0, above(0))
    inference_concurrency: int = setting(8, at_least(1))
    torchserve_key_file: Path | None = None
    # TorchServe's API keys expire after this many minutes (fractions allowed); the embedded
    # stack and the k8s sidecar renew them through its token API well before that.
    torchserve_token_expiration_min: float = setting(10080.0, above(0))
    # CouchDB
    couchdb_url: str = setting("http://127.0.0.1:5984", http_url)
    couchdb_database: str = "iot_results"
    couchdb_user: str = "admin"
    # Empty: read from couchdb_password_file, which `iotpipe up` fills with a random password.
    couchdb_password: SecretStr = NO_SECRET
    couchdb_password_file: Path | None = None
    # Every CouchDB request gives up after this long (a hung server is an outage, not a freeze).
    couchdb_timeout_s: float = setting(30.0, above(0))
    # Failures: an outage is waited out with backoff between these bounds, without end; a batch
    # that fails with no known culprit is tried this many times, then split until the failing
    # record is alone, and a record that still fails alone that many times is dead-lettered.
    attempts_before_split: int = setting(3, at_least(1))
    retry_backoff_initial_s: float = setting(0.5, above(0))
    retry_backoff_max_s: float = setting(10.0, above(0))
    # Observability: Prometheus endpoints of the services, and the dashboard page
    metrics_bind_address: str = "127.0.0.1"  # 0.0.0.0 in a pod, so that Prometheus can scrape it
    bridge_metrics_port: int = setting(9101, PORT_OR_OFF)
    consumer_metrics_port: int = setting(9102, PORT_OR_OFF)
    dashboard_port: int = setting(8050, PORT)
    # Images `iotpipe up` sends through the whole pipeline before it says the stack is up (stack/warmup.py), enough
    # for the JVMs of Kafka and TorchServe to compile their hot paths; 0 sends none.
    warmup_images: int = setting(3000, at_least(0))
    # Assets and state
    models_dir: Path = Path("models")
    data_dir: Path = Path("data/cifar10-jpeg/test")
    model_store: Path = Path("model-store")
    state_dir: Path = Path(".run")

    def __post_init__(self) -> None:
        for name in SECRETS:  # a plain string given in code (Config(couchdb_password="...")) is kept a secret
            if isinstance(value := getattr(self, name), str):
                object.__setattr__(self, name, SecretStr(value))
        problems = [problem for setting in fields(self) if (problem := _problem(setting, getattr(self, setting.name)))]
        if self.retry_backoff_max_s < self.retry_backoff_initial_s:
            maximum, initial = variable("retry_backoff_max_s"), variable("retry_backoff_initial_s")
            problems.append(
                f"{maximum}={self.retry_backoff_max_s!r} is below {initial}={self.retry_backoff_initial_s!r}: "
                f"give a maximum of at least the initial backoff"
            )
        spoken = SERVER_PROTOCOLS.get(self.model_server, ())  # an unknown server is refused by its type already
        if spoken and self.inference_protocol not in spoken:
            problems.append(
                f"{variable('model_server')}={self.model_server!r} does not speak "
                f"{variable('inference_protocol')}={self.inference_protocol!r}: give one of {', '.join(spoken)}"
            )
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then IOTPIPE_* variables, then explicit overrides (flags) that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems = []
        for setting in fields(cls):
            raw = environ.get(variable(setting.name))
            if raw is None:
                continue
            try:
                values[setting.name] = _parse(HINTS[setting.name], raw)
            except ValueError as error:
                shown = "(secret)" if setting.name in SECRETS else repr(raw)
                problems.append(f"{variable(setting.name)}={shown}: {error}")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values).with_stored_couchdb_password()

    def environ(self) -> dict[str, str]:
        """Every setting as the IOTPIPE_* variable that ``load`` reads back to this same configuration."""
        return {variable(setting.name): _format(getattr(self, setting.name)) for setting in fields(self)}

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def with_stored_couchdb_password(self) -> Config:
        """The password of the secret file (which `iotpipe up` writes) when none is configured."""
        if self.couchdb_password or not self.couchdb_secret_file.is_file():
            return self
        return self.replace(couchdb_password=self.couchdb_secret_file.read_text().strip())

    @property
    def couchdb_credentials(self) -> tuple[str, str] | None:
        password = self.couchdb_password.get_secret_value()
        return (self.couchdb_user, password) if password else None

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
            "sasl_plain_password": self.sasl_plain_password.get_secret_value(),
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


HINTS: dict[str, Any] = get_type_hints(Config)
SECRETS = frozenset(name for name, hint in HINTS.items() if hint is SecretStr)


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _problem(setting: dataclasses.Field, value: Any) -> str | None:
    hint = HINTS[setting.name]
    if get_origin(hint) is Literal and value not in get_args(hint):
        wanted = ", ".join(repr(choice) for choice in get_args(hint))
        return f"{variable(setting.name)}={value!r} is not one of {wanted}: give one of them"
    for check in setting.metadata.get("checks", ()):
        if (problem := check(value)) is not None:
            return f"{variable(setting.name)}={value!r}: {problem}"
    return None


def _parse(hint: Any, raw: str) -> Any:
    """The value of one IOTPIPE_* variable; ValueError says what the text should be."""
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("give a whole number") from None
    if hint is float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError("give a finite number")
        return value
    if hint is SecretStr:
        return SecretStr(raw)
    if hint == Path | None:
        return Path(raw) if raw else None
    if hint is Path:
        return Path(raw)
    return raw


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, float):
        return repr(value)
    return str(value)
