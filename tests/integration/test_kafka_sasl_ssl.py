"""The embedded broker's SASL_SSL listener: SCRAM-SHA-512 over TLS, as the k8s prod overlay runs Kafka."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaError

from iotpipe import kafka
from iotpipe.config import Config
from iotpipe.wire import ImageEvent
from stack import kafka_password
from tests.integration.helpers import unique_producer_id, wait_for_documents


def over_sasl_ssl(stack: Config, password: str) -> Config:
    return stack.replace(
        bootstrap_servers=stack.kafka_sasl_ssl_address,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=stack.kafka_sasl_user,
        sasl_plain_password=password,
        ssl_cafile=str(stack.kafka_tls_dir / "ca.crt"),
    )


def test_an_image_sent_over_sasl_ssl_is_stored(stack: Config, images) -> None:
    producer_id = unique_producer_id("sasl")
    event = ImageEvent(source=producer_id, data=images[0].read(), subject=images[0].name)
    sender = kafka.producer(over_sasl_ssl(stack, kafka_password(stack)))
    key, value, headers = event.to_record()
    sender.send(stack.images_topic, key=key, value=value, headers=headers).get(timeout=30)
    sender.close()
    assert [document["_id"] for document in wait_for_documents(stack, producer_id, expected=1)] == [event.id]


def test_a_wrong_password_is_refused(stack: Config) -> None:
    with pytest.raises(KafkaError):
        sender = kafka.producer(over_sasl_ssl(stack, "wrong"), max_block_ms=5000)
        sender.send(stack.images_topic, value=b"x").get(timeout=10)
