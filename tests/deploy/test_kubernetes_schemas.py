"""Every overlay renders, and every object it renders is valid for the pinned Kubernetes release.

Built-in kinds are checked against the strict JSON schemas of Kubernetes 1.34 that kubernetes-validate
ships (unknown fields are errors); KEDA's kinds and prometheus-operator's ServiceMonitor and PodMonitor
(components/monitoring, in prod) against the schemas generated from their CRDs (schemas/,
`make deploy-schemas`). A kind with no schema fails: nothing is waved through.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.conftest import KUBERNETES_VERSION, OVERLAYS, find
from tests.deploy.crd_to_schema import schema_files

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def custom_schema(obj: dict) -> dict | None:
    group, _, version = obj["apiVersion"].rpartition("/")
    path = SCHEMAS / f"{obj['kind'].lower()}-{group}-{version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def schema_errors(obj: dict) -> list[str]:
    """What is wrong with one rendered object, as "Kind/name: path: message" lines."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    schema = custom_schema(obj)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {obj['apiVersion']} {obj['kind']} in Kubernetes {KUBERNETES_VERSION}"]
    except kubernetes_validate.ValidationError as error:
        return [f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message}"]
    return []


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_rendered_object_is_valid_for_kubernetes_1_34(rendered, name):
    objects = rendered[name]
    assert objects, f"{name} rendered nothing"
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_rejects_a_misspelt_field(rendered):
    deployment = copy.deepcopy(find(rendered["dev"], "Deployment", "bridge"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in error for error in schema_errors(deployment))


def test_the_keda_schema_rejects_a_misspelt_trigger_field(rendered):
    scaled_object = copy.deepcopy(find(rendered["prod"], "ScaledObject", "bridge"))
    scaled_object["spec"]["triggers"][0]["authenticationReference"] = {"name": "kafka-keda"}
    assert any("authenticationReference" in error for error in schema_errors(scaled_object))


def test_the_prometheus_operator_schemas_reject_a_misspelt_endpoint_field(rendered):
    service_monitor = copy.deepcopy(find(rendered["prod"], "ServiceMonitor", "torchserve"))
    service_monitor["spec"]["endpoints"][0]["targetPorts"] = "metrics"
    assert any("targetPorts" in error for error in schema_errors(service_monitor))
    pod_monitor = copy.deepcopy(find(rendered["prod"], "PodMonitor", "bridge"))
    pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert any("interval" in error for error in schema_errors(pod_monitor))


def test_crd_schemas_are_strict_where_the_crd_lists_properties():
    crd = {
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"x-kubernetes-int-or-string": True}},
                                },
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        }
    }
    schema = schema_files(crd)["widget-example.com-v1.json"]
    validator = jsonschema.Draft202012Validator(schema)
    good = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}, "spec": {"size": "1Gi"}}
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors(good | {"spec": {"size": 1, "colour": "red"}}))
    assert not list(validator.iter_errors(good | {"status": {"anything": 1}}))
