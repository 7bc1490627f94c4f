"""The broker's TLS for the SASL_SSL listener: a private CA and a broker certificate that is renewed.

Made on the first `iotpipe up` (or `make certs`) under .run/kafka/tls/, never committed:

- ca.crt: what clients trust (IOTPIPE_SSL_CAFILE): the current CA, then older CAs while they are valid;
- ca.key: the current CA's private key;
- broker.p12 and broker.p12.password: the broker's key store (its key, its certificate, the CA);
- broker.crt: the broker's certificate alone, what the renewal decision reads.

The broker certificate lives ``kafka_certificate_expiration_min`` and a new one is issued from the
same CA when a third of its lifetime is left, so clients, which trust the CA, need nothing new. The
CA lives ten broker lifetimes. When a broker certificate issued now would outlive the CA, a new CA
signs it and ca.crt holds the new CA and the old one (still valid for less than a broker lifetime;
dropped at the next new CA): a client that reads ca.crt when it connects (kafka-python does, for
every connection) trusts the broker before and after; a copy of ca.crt kept elsewhere must be
copied again then (after 22 years by default).

The supervisor of the embedded stack runs ``CertificateRenewer``: it renews the certificate when
due and makes the running broker load the new key store through Kafka's dynamic reconfiguration of
the listener (no restart), then checks that the broker serves the new certificate.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from iotpipe.config import Config

log = logging.getLogger("iotpipe.renew_certificate")

CA_LIFETIMES = 10  # the CA outlives ten broker certificates
BROKER_NAMES = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
# The SASL_SSL listener of stack/kafka/server.properties; altering this per-broker setting reloads its key store.
KEYSTORE_LOCATION = "listener.name.sasl_ssl.ssl.keystore.location"
CHECK_EVERY_S = 1.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def broker_lifetime(config: Config) -> timedelta:
    return timedelta(minutes=config.kafka_certificate_expiration_min)


class CertificateError(RuntimeError):
    """The broker did not take its new key store; the message says what it answered."""


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    @property
    def password_file(self) -> Path:
        return self.folder / "broker.p12.password"

    @property
    def certificate(self) -> Path:
        return self.folder / "broker.crt"

    def password(self) -> str:
        return self.password_file.read_text()

    def broker_certificate(self) -> x509.Certificate | None:
        return _read_certificates(self.certificate)[0] if self.certificate.exists() else None


# -- decisions ---------------------------------------------------------------------------------


def lifetime_of(certificate: x509.Certificate) -> timedelta:
    return certificate.not_valid_after_utc - certificate.not_valid_before_utc


def renewal_due(certificate: x509.Certificate, lifetime: timedelta, now: datetime) -> bool:
    """A third of its lifetime left, not valid yet (the clock went back), or a lifetime not the configured one.

    A third, as cert-manager renews by default: the broker certificate must be loaded before it
    expires, and that third is the time left to do it while the broker or the supervisor is away
    (275 days by default, 40 s of a 2-minute certificate, which outlasts a broker restart).
    """
    left = certificate.not_valid_after_utc - now
    return (
        left <= lifetime_of(certificate) / 3
        or now < certificate.not_valid_before_utc
        or abs(lifetime_of(certificate) - lifetime) > timedelta(seconds=1)
    )


def ca_due(ca: x509.Certificate, lifetime: timedelta, now: datetime) -> bool:
    """A broker certificate issued now would outlive the CA."""
    return now + lifetime > ca.not_valid_after_utc


def issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- issuing -----------------------------------------------------------------------------------


def ensure_certificates(files: TlsFiles, lifetime: timedelta, now: datetime | None = None) -> list[str]:
    """Make what is missing and renew what is due; what was issued ("CA", "broker certificate")."""
    now = (now or utc_now()).replace(microsecond=0)
    issued = []
    with _locked(files.folder):
        cas = _read_certificates(files.ca) if files.ca.exists() else []
        key = _read_key(files.ca_key) if files.ca_key.exists() else None
        if not cas or key is None or key.public_key() != cas[0].public_key() or ca_due(cas[0], lifetime, now):
            key, cas = _new_ca(files, cas, lifetime, now)
            issued.append("CA")
        broker = files.broker_certificate()
        if broker is None or not issued_by(broker, cas[0]) or renewal_due(broker, lifetime, now):
            _new_broker_certificate(files, cas[0], key, lifetime, now)
            issued.append("broker certificate")
    return issued


def _new_ca(
    files: TlsFiles, cas: list[x509.Certificate], lifetime: timedelta, now: datetime
) -> tuple[rsa.RSAPrivateKey, list[x509.Certificate]]:
    """A new CA first in ca.crt, the older ones kept while they are valid (clients trust both meanwhile)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"iotpipe kafka CA {now.isoformat()}")])
    ca = (
        _builder(name, key.public_key(), now, CA_LIFETIMES * lifetime)
        .issuer_name(name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    cas = [ca, *(old for old in cas if old.not_valid_after_utc > now)]
    _write_atomically(files.ca_key, _pem_key(key))
    _write_atomically(files.ca, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas), mode=0o644)
    return key, cas


def _new_broker_certificate(
    files: TlsFiles, ca: x509.Certificate, ca_key: rsa.RSAPrivateKey, lifetime: timedelta, now: datetime
) -> None:
    """Key store first, then broker.crt: a crash between them only renews once more."""
    if not files.password_file.exists():
        _write_atomically(files.password_file, secrets.token_urlsafe(18).encode())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])  # the broker checks it stays the same
    certificate = (
        _builder(name, key.public_key(), now, lifetime)
        .issuer_name(ca.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(BROKER_NAMES), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    keystore = pkcs12.serialize_key_and_certificates(
        b"broker", key, certificate, [ca], serialization.BestAvailableEncryption(files.password().encode())
    )
    _write_atomically(files.keystore, keystore)
    _write_atomically(files.certificate, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _builder(name: x509.Name, public_key, now: datetime, lifetime: timedelta) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(seconds=round(lifetime.total_seconds())))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(**granted: bool) -> x509.KeyUsage:
    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    usages += ("key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{usage: granted.get(usage, False) for usage in usages})


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, pkcs8, serialization.NoEncryption())


def _read_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _read_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey), f"{path} holds no RSA key"
    return key


def _write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Readers (the broker, clients) see the old file or the new one, never a half-written one."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One issuer at a time: the supervisor's renewer and a broker start may both ensure."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- the running broker ------------------------------------------------------------------------


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def served_certificate(address: str, ca: Path, timeout_s: float = 5.0) -> x509.Certificate:
    """The certificate a TLS listener serves, verified against ca.crt as a client would (OSError if not)."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der is not None  # a verified handshake always has the peer's certificate
    return x509.load_der_x509_certificate(der)


def reload_keystore(config: Config, keystore: Path) -> None:
    """Make the running broker load its key store again, without a restart.

    Kafka reconfigures a listener's key store when its location is altered as a per-broker dynamic
    config (KIP-226), and reloads it when the location is the same but the file has changed.
    """
    admin = KafkaAdminClient(bootstrap_servers=config.bootstrap_servers, **config.kafka_security)
    try:
        broker = str(admin.describe_cluster()["brokers"][0]["broker_id"])
        resource = ConfigResource(ConfigResourceType.BROKER, broker, {KEYSTORE_LOCATION: str(keystore)})
        answer = admin.alter_configs([resource], raise_on_unknown=False, incremental=True)["broker"][broker]
    finally:
        admin.close()
    if answer != "OK":
        raise CertificateError(f"Kafka broker {broker} refused the key store {keystore}: {answer}")


class CertificateRenewer:
    """Renews the broker certificate when due, and makes the running broker serve the one on disk."""

    def __init__(
        self,
        config: Config,
        reload: Callable[[Config, Path], None] = reload_keystore,
        served: Callable[[str, Path], x509.Certificate] = served_certificate,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.files = TlsFiles(config.kafka_tls_dir.resolve())
        self.lifetime = broker_lifetime(config)
        self.reload, self.served, self.clock = reload, served, clock
        self.serving: str | None = None  # fingerprint of the certificate the broker was seen to serve

    def renew_due(self) -> list[str]:
        """Renew what is due, then bring the broker up to date; what was issued."""
        try:
            issued = ensure_certificates(self.files, self.lifetime, self.clock())
        except (OSError, ValueError) as error:  # a full disk, a damaged file: the renewer must go on
            log.error("renewing the certificates in %s failed, next try in %.0f s: %s (removing the folder "
                      "starts over with a new CA)", self.files.folder, CHECK_EVERY_S, error)  # fmt: skip
            return []
        for what in issued:
            log.info("issued a new %s in %s", what, self.files.folder)
        on_disk = self.files.broker_certificate()
        if on_disk is not None and fingerprint(on_disk) != self.serving:
            self._bring_broker_up_to_date(on_disk)
        return issued

    def _bring_broker_up_to_date(self, on_disk: x509.Certificate) -> None:
        """Seen served: done; else ask the broker to reload its key store, and look again at the next check."""
        address = self.config.kafka_sasl_ssl_address
        try:
            served = fingerprint(self.served(address, self.files.ca))
        except ssl.SSLError as error:  # a certificate that is no longer valid: reload all the same
            served = f"no valid certificate ({error})"
        except OSError as error:  # away: the broker loads the key store on disk when it starts
            log.debug("the broker at %s is away: %s", address, error)
            return
        if served == fingerprint(on_disk):
            self.serving = served
            log.info("the broker at %s serves the certificate valid until %s", address, on_disk.not_valid_after_utc)
            return
        try:
            self.reload(self.config, self.files.keystore)
            log.info("asked the broker at %s to reload %s (it served %s)", address, self.files.keystore, served)
        except (OSError, KafkaError, CertificateError) as error:
            log.warning("the broker at %s serves %s, not %s, and did not reload it (next try in %.0f s): %s",
                        address, served, self.files.certificate, CHECK_EVERY_S, error)  # fmt: skip

    def run(self, stopping: threading.Event) -> None:
        log.info("renewing %s when a third of its life is left", self.files.certificate)
        while not stopping.is_set():
            self.renew_due()
            stopping.wait(CHECK_EVERY_S)


if __name__ == "__main__":
    import sys

    config = Config.load()
    files = TlsFiles(Path(sys.argv[1]) if len(sys.argv) > 1 else config.kafka_tls_dir)
    ensure_certificates(files, broker_lifetime(config))
    print(files.ca)
