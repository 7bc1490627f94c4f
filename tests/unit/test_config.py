"""The configuration: validated when loaded, secrets that never print, and a round trip through IOTPIPE_* variables."""

from __future__ import annotations

import logging
import pickle
from dataclasses import fields
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.clients import PROTOCOLS
from iotpipe.config import HINTS, MODEL_ARCHS, SERVER_PROTOCOLS, Config, ConfigError, SecretStr, variable
from model_archives import CHECKPOINTS

PASSWORD = "s3cret-Pa55word"

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
valid_settings = st.fixed_dictionaries(
    # Away from the checkout's own .run, whose secrets a running stack has written.
    {"state_dir": st.just(Path("/nonexistent/iotpipe-state"))},
    optional={
        "bootstrap_servers": st.sampled_from(["127.0.0.1:9092", "kafka-0:9092,kafka-1:19092"]),
        "topic_partitions": st.integers(1, 1000),
        "linger_ms": st.integers(0, 10_000),
        "security_protocol": st.sampled_from(["PLAINTEXT", "SASL_SSL"]),
        "sasl_plain_password": texts,
        "couchdb_password": texts.filter(bool),
        "couchdb_user": texts,
        "canary_share": st.floats(0, 1),
        "canary_version": texts,
        "model_arch": st.sampled_from(MODEL_ARCHS),
        "inference_url": st.sampled_from(["http://torchserve:8080", "https://[::1]:443"]),
        "request_timeout_s": st.floats(0.001, 1e6),
        "bridge_metrics_port": st.integers(0, 65535),
        "torchserve_key_file": st.none() | st.just(Path("/var/run/key_file.json")),
    },
)


@given(valid_settings)
def test_a_configuration_handed_over_as_its_variables_loads_back_the_same(settings: dict) -> None:
    config = Config(**settings)
    assert Config.load(config.environ()) == config


@given(st.sampled_from([setting.name for setting in fields(Config)]), texts)
def test_any_text_in_any_variable_loads_or_is_refused_with_the_variable_named(name: str, raw: str) -> None:
    try:
        Config.load({variable(name): raw, "IOTPIPE_STATE_DIR": "/nonexistent/iotpipe-state"})
    except ConfigError as error:
        assert variable(name) in str(error)


@pytest.mark.parametrize(
    ("name", "raw", "fix"),
    [
        ("canary_share", "1.5", "give a number from 0 to 1"),
        ("model_arch", "resnet99", "'resnet20', 'resnet32', 'resnet44', 'resnet56'"),
        ("inference_protocol", "grpc", "'torchserve', 'open-inference'"),
        ("security_protocol", "sasl_ssl", "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'"),
        ("dashboard_port", "70000", "give a number from 1 to 65535"),
        ("bootstrap_servers", "kafka:9092,kafka-1", "give HOST:PORT"),
        ("couchdb_url", "couchdb:5984", "http:// or https:// URL"),
        ("batch_size", "sixteen", "give a whole number"),
        ("request_timeout_s", "nan", "give a finite number"),
        ("max_poll_records", "0", "give at least 1"),
    ],
)
def test_a_bad_setting_is_refused_at_load_naming_its_variable_and_the_fix(name: str, raw: str, fix: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config.load({variable(name): raw})
    assert variable(name) in str(refused.value)
    assert fix in str(refused.value)


def test_every_bad_setting_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.load({"IOTPIPE_CANARY_SHARE": "-1", "IOTPIPE_GRPC_INFERENCE_PORT": "0"})
    assert "IOTPIPE_CANARY_SHARE" in str(refused.value)
    assert "IOTPIPE_GRPC_INFERENCE_PORT" in str(refused.value)


def test_a_backoff_maximum_below_its_initial_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"IOTPIPE_RETRY_BACKOFF_MAX_S=0\.1 is below IOTPIPE_RETRY_BACKOFF_INITIAL_S"):
        Config(retry_backoff_initial_s=0.5, retry_backoff_max_s=0.1)


def test_a_model_server_with_a_protocol_it_does_not_speak_is_refused_naming_those_it_does() -> None:
    with pytest.raises(
        ConfigError, match=r"IOTPIPE_MODEL_SERVER='mlserver' does not speak .*: give one of open-inference"
    ):
        Config(model_server="mlserver", inference_protocol="torchserve")


def test_secrets_never_print_but_reach_the_clients_that_need_them(caplog: pytest.LogCaptureFixture) -> None:
    config = Config.load({"IOTPIPE_COUCHDB_PASSWORD": PASSWORD, "IOTPIPE_SASL_PLAIN_PASSWORD": PASSWORD})
    logging.getLogger("test").warning("configuration: %s %r", config, config)
    for shown in (repr(config), str(config), f"{config}", caplog.text, str(config.couchdb_password)):
        assert PASSWORD not in shown
    assert "SecretStr('**********')" in repr(config)
    assert config.couchdb_credentials == ("admin", PASSWORD)
    assert config.kafka_security["sasl_plain_password"] == PASSWORD
    assert config.environ()["IOTPIPE_COUCHDB_PASSWORD"] == PASSWORD


def test_a_bad_secret_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.load({"IOTPIPE_COUCHDB_PASSWORD": PASSWORD, "IOTPIPE_BATCH_SIZE": PASSWORD})
    assert "IOTPIPE_BATCH_SIZE" in str(refused.value)
    assert Config.load({"IOTPIPE_COUCHDB_PASSWORD": PASSWORD}).couchdb_password.get_secret_value() == PASSWORD


def test_a_password_given_as_text_in_code_is_kept_a_secret() -> None:
    config = Config(couchdb_password=PASSWORD).replace(sasl_plain_password=PASSWORD)
    assert isinstance(config.couchdb_password, SecretStr)
    assert isinstance(config.sasl_plain_password, SecretStr)
    assert PASSWORD not in repr(config)
    assert pickle.loads(pickle.dumps(config)) == config  # the load test hands it to spawned processes


def test_an_empty_secret_shows_that_it_is_empty() -> None:
    assert repr(SecretStr()) == "SecretStr('')"
    assert not Config().couchdb_password
    assert Config().couchdb_credentials is None


def test_the_couchdb_password_comes_from_its_secret_file_when_none_is_configured(tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "couchdb_password"
    secret.parent.mkdir()
    secret.write_text(PASSWORD + "\n")
    assert Config.load({"IOTPIPE_STATE_DIR": str(tmp_path)}).couchdb_credentials == ("admin", PASSWORD)
    configured = {"IOTPIPE_STATE_DIR": str(tmp_path), "IOTPIPE_COUCHDB_PASSWORD": "other"}
    assert Config.load(configured).couchdb_credentials == ("admin", "other")


def test_flags_override_variables_and_are_validated_too() -> None:
    assert Config.load({"IOTPIPE_MODEL_ARCH": "resnet32"}, model_arch="resnet56").model_arch == "resnet56"
    with pytest.raises(ConfigError, match="IOTPIPE_MODEL_ARCH"):
        Config.load({}, model_arch="resnet99")


def test_every_model_arch_has_a_checkpoint_and_every_protocol_a_client() -> None:
    assert set(MODEL_ARCHS) == set(CHECKPOINTS)
    assert set(PROTOCOLS) == set(get_args(HINTS["inference_protocol"]))
    assert set(SERVER_PROTOCOLS) == set(get_args(HINTS["model_server"]))
