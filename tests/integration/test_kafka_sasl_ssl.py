"""The embedded broker's SASL_SSL listener: SCRAM-SHA-512 over TLS, as the k8s prod overlay runs Kafka.

The test stack's broker certificate lives two minutes (conftest): the supervisor renews it from the
same CA with a third of its life left and the running broker loads it without a restart.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from kafka.errors import KafkaError

from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.wire import ImageEvent
from stack import Stack
from stack.kafka import kafka_password
from stack.tls import TlsFiles, fingerprint, served_certificate
from tests.integration.helpers import unique_producer_id, wait_for_documents

SEND_EVERY_S = 5.0


def over_sasl_ssl(stack: Config, password: str) -> Config:
    return stack.replace(
        bootstrap_servers=stack.kafka_sasl_ssl_address,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=stack.kafka_sasl_user,
        sasl_plain_password=password,
        ssl_cafile=str(stack.kafka_tls_dir / "ca.crt"),
    )


def send_image(sender, stack: Config, producer_id: str, image) -> str:
    event = ImageEvent(source=producer_id, data=image.read(), subject=image.name)
    key, value, headers = event.to_record()
    sender.send(stack.images_topic, key=key, value=value, headers=headers).get(timeout=30)
    return event.id


def test_an_image_sent_over_sasl_ssl_is_stored(stack: Config, images) -> None:
    producer_id = unique_producer_id("sasl")
    sender = kafka_clients.producer(over_sasl_ssl(stack, kafka_password(stack)))
    sent = send_image(sender, stack, producer_id, images[0])
    sender.close()
    assert [document["_id"] for document in wait_for_documents(stack, producer_id, expected=1)] == [sent]


def test_a_wrong_password_is_refused(stack: Config) -> None:
    with pytest.raises(KafkaError):
        sender = kafka_clients.producer(over_sasl_ssl(stack, "wrong"), max_block_ms=5000)
        sender.send(stack.images_topic, value=b"x").get(timeout=10)


def test_images_sent_across_certificate_renewals_are_all_stored_and_the_broker_is_not_restarted(
    stack: Config, images
) -> None:
    """Images go over a connection opened before the renewal and over new ones, until the first expires."""
    assert stack.kafka_certificate_expiration_min == 2.0
    secure, tls, broker = (
        over_sasl_ssl(stack, kafka_password(stack)),
        TlsFiles(stack.kafka_tls_dir),
        Stack(stack).kafka.process,
    )
    kafka_pid, kafka_restarts = broker.pid(), broker.restarts()
    first = served_certificate(stack.kafka_sasl_ssl_address, tls.ca)
    served, sent = {fingerprint(first)}, {"long-lived": [], "new connection": []}
    producer_ids = {way: unique_producer_id("tls") for way in sent}
    long_lived = kafka_clients.producer(secure)
    started = time.monotonic()
    while True:
        first_expired = datetime.now(UTC) > first.not_valid_after_utc
        image = images[sum(map(len, sent.values())) % len(images)]
        sent["long-lived"].append(send_image(long_lived, stack, producer_ids["long-lived"], image))
        sender = kafka_clients.producer(secure)
        sent["new connection"].append(send_image(sender, stack, producer_ids["new connection"], image))
        sender.close()
        served.add(fingerprint(served_certificate(stack.kafka_sasl_ssl_address, tls.ca)))
        if first_expired:
            break  # the last new connection came after the first certificate had expired
        time.sleep(SEND_EVERY_S)
    long_lived.close()
    stored = {
        way: {d["_id"] for d in wait_for_documents(stack, producer_ids[way], len(ids))} for way, ids in sent.items()
    }
    print(
        f"\ncertificate renewal: {len(served) - 1} renewals seen over {time.monotonic() - started:.0f} s; "
        + ", ".join(f"{way}: {len(sent[way])} images sent, {len(stored[way])} stored" for way in sent)
    )
    assert len(served) >= 2, "the broker still serves its first certificate; see .run/logs/supervisor.log"
    assert stored == {way: set(ids) for way, ids in sent.items()}
    assert (broker.pid(), broker.restarts()) == (kafka_pid, kafka_restarts)
