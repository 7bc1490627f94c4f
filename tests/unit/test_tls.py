"""The broker's TLS: what the certificates say, when they are renewed, and how the broker is brought up to date."""

from __future__ import annotations

import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpipe.config import Config
from stack.tls import (
    CA_LIFETIMES,
    CertificateError,
    CertificateRenewer,
    TlsFiles,
    ensure_certificates,
    fingerprint,
    issued_by,
    lifetime_of,
    renewal_due,
)

START = datetime(2030, 1, 1, tzinfo=UTC)
MINUTES_2 = timedelta(minutes=2)


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path / "tls")


def cas_of(files: TlsFiles) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(files.ca.read_bytes())


def test_the_broker_certificate_names_localhost_lives_the_configured_time_and_is_issued_by_the_ca(
    files: TlsFiles,
) -> None:
    assert ensure_certificates(files, MINUTES_2, START) == ["CA", "broker certificate"]
    broker, [ca] = files.broker_certificate(), cas_of(files)
    assert broker is not None
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert (broker.not_valid_before_utc, lifetime_of(broker)) == (START, MINUTES_2)
    assert broker.issuer == ca.subject and issued_by(broker, ca)
    assert not broker.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert lifetime_of(ca) == CA_LIFETIMES * MINUTES_2


def test_the_key_store_opens_with_its_password_and_holds_the_key_the_certificate_and_the_ca(files: TlsFiles) -> None:
    ensure_certificates(files, MINUTES_2, START)
    store = pkcs12.load_pkcs12(files.keystore.read_bytes(), files.password().encode())
    assert store.key is not None and store.cert is not None
    assert store.cert.certificate == files.broker_certificate()
    assert [extra.certificate for extra in store.additional_certs] == cas_of(files)
    assert store.key.public_key() == store.cert.certificate.public_key()


def test_private_files_are_readable_by_their_owner_only(files: TlsFiles) -> None:
    ensure_certificates(files, MINUTES_2, START)
    for private in (files.ca_key, files.keystore, files.password_file):
        assert private.stat().st_mode & 0o077 == 0, private


def test_nothing_is_issued_again_while_the_certificate_has_more_than_a_third_of_its_life(files: TlsFiles) -> None:
    ensure_certificates(files, MINUTES_2, START)
    keystore = files.keystore.read_bytes()
    assert ensure_certificates(files, MINUTES_2, START + timedelta(seconds=79)) == []
    assert files.keystore.read_bytes() == keystore


def test_with_a_third_of_its_life_left_a_new_certificate_comes_from_the_same_ca_with_the_same_password(
    files: TlsFiles,
) -> None:
    ensure_certificates(files, MINUTES_2, START)
    ca, password, old = files.ca.read_bytes(), files.password(), files.broker_certificate()
    assert ensure_certificates(files, MINUTES_2, START + timedelta(seconds=80)) == ["broker certificate"]
    new = files.broker_certificate()
    assert new is not None and old is not None
    assert (files.ca.read_bytes(), files.password()) == (ca, password)
    assert new.serial_number != old.serial_number and new.subject == old.subject  # Kafka refuses a changed name
    assert new.not_valid_before_utc == START + timedelta(seconds=80)
    assert pkcs12.load_pkcs12(files.keystore.read_bytes(), password.encode()).cert.certificate == new
    assert sorted(path.name for path in files.folder.iterdir() if path.name.startswith(".broker")) == []


LIFETIME_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def living(lifetime: timedelta) -> x509.Certificate:
    """A certificate issued at START that lives ``lifetime`` (self-signed: only its dates matter here)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(LIFETIME_KEY.public_key())
    builder = builder.serial_number(1).not_valid_before(START).not_valid_after(START + lifetime)
    return builder.sign(LIFETIME_KEY, hashes.SHA256())


@settings(max_examples=200)
@given(lifetime_s=st.integers(min_value=60, max_value=100 * 365 * 86400), elapsed=st.fractions(0, 2))
def test_a_certificate_is_due_exactly_when_a_third_of_its_life_or_less_is_left(lifetime_s: int, elapsed) -> None:
    lifetime = timedelta(seconds=lifetime_s)
    now = START + timedelta(seconds=round(lifetime_s * elapsed))
    assert renewal_due(living(lifetime), lifetime, now) == (START + lifetime - now <= lifetime / 3)


def test_a_new_configured_lifetime_is_applied_at_once(files: TlsFiles) -> None:
    ensure_certificates(files, timedelta(days=825), START)
    assert ensure_certificates(files, MINUTES_2, START + timedelta(seconds=1)) == ["broker certificate"]
    broker = files.broker_certificate()
    assert broker is not None and lifetime_of(broker) == MINUTES_2


def test_a_certificate_not_valid_yet_because_the_clock_went_back_is_renewed(files: TlsFiles) -> None:
    ensure_certificates(files, MINUTES_2, START)
    assert ensure_certificates(files, MINUTES_2, START - timedelta(seconds=30)) == ["broker certificate"]


def test_when_the_ca_nears_its_end_a_new_ca_signs_and_clients_trust_both_until_the_old_one_expires(
    files: TlsFiles,
) -> None:
    ensure_certificates(files, MINUTES_2, START)
    [old_ca] = cas_of(files)
    almost_end = old_ca.not_valid_after_utc - MINUTES_2 + timedelta(seconds=1)  # a new certificate would outlive it
    assert ensure_certificates(files, MINUTES_2, almost_end) == ["CA", "broker certificate"]
    new_ca, kept = cas_of(files)
    assert kept == old_ca and new_ca.subject != old_ca.subject
    assert issued_by(files.broker_certificate(), new_ca)  # type: ignore[arg-type]
    ensure_certificates(files, MINUTES_2, old_ca.not_valid_after_utc + timedelta(days=1))
    assert old_ca not in cas_of(files)


def test_a_ca_key_that_does_not_match_ca_crt_after_a_crash_means_a_new_ca(files: TlsFiles) -> None:
    ensure_certificates(files, MINUTES_2, START)
    other = TlsFiles(files.folder.parent / "other")
    ensure_certificates(other, MINUTES_2, START)
    files.ca_key.write_bytes(other.ca_key.read_bytes())
    assert ensure_certificates(files, MINUTES_2, START + timedelta(seconds=1)) == ["CA", "broker certificate"]


def test_a_failed_write_leaves_the_old_key_store_whole_and_no_temporary_file(
    files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_certificates(files, MINUTES_2, START)
    keystore = files.keystore.read_bytes()

    def disk_full(source, destination) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        ensure_certificates(files, MINUTES_2, START + timedelta(seconds=80))
    assert files.keystore.read_bytes() == keystore
    assert [path.name for path in files.folder.iterdir() if path.name.startswith(".broker")] == []


# -- the renewer and the running broker ---------------------------------------------------------


class FakeBroker:
    """Serves the certificate of the key store it last loaded; can be away or refuse a reload."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.loaded = files.broker_certificate()
        self.reloads = 0
        self.away = False
        self.refuses = False
        self.expired = False

    def served(self, address: str, ca: Path) -> x509.Certificate:
        if self.away:
            raise ConnectionRefusedError(111, f"Connection refused: {address}")
        if self.expired:
            raise ssl.SSLCertVerificationError("certificate verify failed: certificate has expired")
        assert self.loaded is not None
        return self.loaded

    def reload(self, config: Config, keystore: Path) -> None:
        assert not self.away, "a broker that is away is not asked to reload"
        if self.refuses:
            raise CertificateError("Kafka broker 1 refused the key store")
        self.reloads += 1
        self.loaded, self.expired = self.files.broker_certificate(), False


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def renewer(tmp_path: Path) -> tuple[CertificateRenewer, FakeBroker, Clock]:
    config = Config(state_dir=tmp_path, kafka_certificate_expiration_min=2.0)
    files = TlsFiles(config.kafka_tls_dir.resolve())
    ensure_certificates(files, MINUTES_2, START)  # the broker's first start
    broker, clock = FakeBroker(files), Clock()
    return CertificateRenewer(config, reload=broker.reload, served=broker.served, clock=clock), broker, clock


def test_the_renewer_asks_the_broker_to_reload_only_after_a_renewal_and_sees_it_served(renewer) -> None:
    renewer, broker, clock = renewer
    for _ in range(3):
        assert renewer.renew_due() == []
    assert broker.reloads == 0
    clock.now += timedelta(seconds=80)
    assert renewer.renew_due() == ["broker certificate"]
    assert broker.reloads == 1
    renewer.renew_due()
    assert fingerprint(broker.loaded) == renewer.serving == fingerprint(renewer.files.broker_certificate())
    renewer.renew_due()
    assert broker.reloads == 1


def test_a_broker_that_refuses_a_reload_is_asked_again_at_each_check_until_it_serves_the_new_certificate(
    renewer,
) -> None:
    renewer, broker, clock = renewer
    clock.now += timedelta(seconds=80)
    broker.refuses = True
    renewer.renew_due()
    renewer.renew_due()
    assert broker.reloads == 0
    broker.refuses = False
    renewer.renew_due()
    renewer.renew_due()
    assert broker.reloads == 1 and renewer.serving == fingerprint(renewer.files.broker_certificate())


def test_a_broker_that_is_away_is_not_asked_to_reload_and_serves_the_new_certificate_when_it_starts(renewer) -> None:
    renewer, broker, clock = renewer
    broker.away = True
    clock.now += timedelta(seconds=80)
    assert renewer.renew_due() == ["broker certificate"]
    renewer.renew_due()
    broker.away, broker.loaded = False, renewer.files.broker_certificate()  # its start reads the key store on disk
    renewer.renew_due()
    assert broker.reloads == 0 and renewer.serving == fingerprint(renewer.files.broker_certificate())


def test_a_supervisor_that_finds_the_broker_serving_a_certificate_that_no_longer_verifies_reloads_it(
    renewer,
) -> None:
    renewer, broker, _ = renewer
    broker.expired = True  # say the supervisor was stopped for a while: nobody reloaded in time
    renewer.renew_due()
    assert broker.reloads == 1
    renewer.renew_due()
    assert renewer.serving == fingerprint(renewer.files.broker_certificate())


def test_a_tls_folder_removed_by_hand_is_made_again_with_a_new_ca_and_the_broker_reloads_it(renewer) -> None:
    renewer, broker, _ = renewer
    renewer.renew_due()
    for path in renewer.files.folder.iterdir():
        path.unlink()
    broker.expired = True  # the old CA is gone from ca.crt: the certificate served no longer verifies
    assert renewer.renew_due() == ["CA", "broker certificate"]
    renewer.renew_due()
    assert broker.reloads == 1 and renewer.serving == fingerprint(renewer.files.broker_certificate())


def test_a_damaged_file_is_logged_and_the_renewer_goes_on(renewer, caplog: pytest.LogCaptureFixture) -> None:
    renewer, _, _ = renewer
    renewer.files.certificate.write_text("not a certificate")
    assert renewer.renew_due() == []
    assert "removing the folder starts over" in caplog.text
