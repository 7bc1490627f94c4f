"""Model servers' answers to typed results: what each protocol reads, and the key each server gets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.clients import Labelled, NoKey, OpenInferenceClient, TorchServeClient, Undecodable, key_for
from iotpipe.config import Config, ConfigError
from iotpipe.torchserve import InferenceKey
from stack import Stack

CONFIG = Config.load({})
MLSERVER = CONFIG.replace(model_server="mlserver", inference_protocol="open-inference")
SCORES = {"cat": 0.9, "dog": 0.1}
READ_ERRORS = (ValueError, KeyError, TypeError)  # what InferenceClient turns into BatchFailed

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def open_inference_answer(labels: list[str], scores: list[str], errors: list[str]) -> dict:
    def output(name: str, values: list[str]) -> dict:
        return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}

    outputs = [output("label", labels), output("scores", scores), output("error", errors)]
    return {"model_name": "cifar10-resnet", "model_version": "20.2", "id": "1", "outputs": outputs}


def test_both_protocols_read_the_same_answer_as_the_same_results() -> None:
    native = [{"label": "cat", "scores": SCORES, "model": "cifar10-resnet", "model_version": "20.2"}, {"error": "bad"}]
    oip = open_inference_answer(["cat", ""], [json.dumps(SCORES), "{}"], ["", "bad"])
    expected = [Labelled("cat", SCORES, "cifar10-resnet", "20.2"), Undecodable("bad")]
    assert TorchServeClient.parse(None, native) == OpenInferenceClient.parse(None, oip) == expected


@given(json_values)
def test_any_native_answer_is_results_or_an_error_the_client_reads_as_a_failed_request(answer) -> None:
    try:
        results = TorchServeClient.parse(None, answer)
    except READ_ERRORS:
        return
    assert all(isinstance(result, Labelled | Undecodable) for result in results)


@given(st.lists(st.tuples(json_values, json_values, json_values), max_size=4), json_values)
def test_any_open_inference_answer_is_results_or_an_error_the_client_reads_as_a_failed_request(rows, version) -> None:
    answer = {"model_name": "m", "model_version": version, "outputs": []}
    for index, name in enumerate(("label", "scores", "error")):
        answer["outputs"].append({"name": name, "data": [row[index] for row in rows]})
    try:
        results = OpenInferenceClient.parse(None, answer)
    except READ_ERRORS:
        return
    assert all(isinstance(result, Labelled | Undecodable) for result in results)


def test_only_torchserve_gets_its_inference_key() -> None:
    assert isinstance(key_for(CONFIG), InferenceKey)
    assert isinstance(key_for(CONFIG.replace(inference_protocol="open-inference")), InferenceKey)
    assert isinstance(key_for(MLSERVER), NoKey) and NoKey().headers() == {}


def test_mlserver_with_torchserves_own_protocol_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="give one of open-inference"):
        Config.load({"IOTPIPE_MODEL_SERVER": "mlserver"})
    with pytest.raises(ConfigError, match="IOTPIPE_MODEL_SERVER='triton' is not one of"):
        Config.load({"IOTPIPE_MODEL_SERVER": "triton", "IOTPIPE_INFERENCE_PROTOCOL": "open-inference"})


def test_the_stack_starts_the_configured_model_server_in_torchserves_place() -> None:
    names = [component.name for component in Stack(MLSERVER).components]
    assert names == ["kafka", "couchdb", "mlserver", "bridge", "consumer"]
    assert [component.name for component in Stack(CONFIG).components][2] == "torchserve"
