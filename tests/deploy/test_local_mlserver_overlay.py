"""k8s/overlays/local-mlserver and ansible/inventories/local-cluster-mlserver, offline: what
`python -m cluster.e2e --overlay local-mlserver` relies on (the local overlay with MLServer in TorchServe's place)."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
import yaml

from cluster.e2e import INVENTORIES, OVERLAY_INVENTORIES, inventory_args, other_versions, overlay_images
from docker import build_images
from iotpipe.config import Config
from model_archives import model_version
from tests.deploy import test_manifest_promises as promises
from tests.deploy.conftest import ANSIBLE, K8S, find, kustomize_build, pod_specs
from tests.deploy.test_ansible import PLAYBOOKS, ansible_playbook
from tests.deploy.test_kubernetes_schemas import schema_errors
from tests.deploy.test_local_prod_overlay import CAMERAS, NODE_CPU, NODE_MEMORY_GIB, pod_requests, referenced_secrets

OVERLAY = "local-mlserver"
INVENTORY_VARS = ANSIBLE / "inventories" / "local-cluster-mlserver" / "group_vars" / "all" / "main.yml"
LOCAL_INVENTORY_VARS = ANSIBLE / "inventories" / "local-cluster" / "group_vars" / "all" / "main.yml"
IMAGES_DEFAULTS = ANSIBLE / "roles" / "iotpipe_images" / "defaults" / "main.yml"
# What the component brings in TorchServe's place.
MLSERVER_OBJECTS = {
    ("Deployment", "mlserver"),
    ("Service", "mlserver"),
    ("NetworkPolicy", "mlserver"),
    ("PodDisruptionBudget", "mlserver"),
}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return kustomize_build(K8S / "overlays" / OVERLAY)


@pytest.fixture(scope="module")
def local() -> list[dict]:
    return kustomize_build(K8S / "overlays" / "local")


def inventory_vars() -> dict:
    return yaml.safe_load(INVENTORY_VARS.read_text())


def kind_names(objects: list[dict]) -> set[tuple[str, str]]:
    """(kind, name) of each object, without the hash suffix of generated ConfigMaps."""
    return {(o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in objects}


def own_images(objects: list[dict]) -> dict[str, str]:
    """{image: pull policy} of every container."""
    return {
        container["image"]: container["imagePullPolicy"]
        for spec in pod_specs(objects).values()
        for container in promises.containers(spec)
    }


def test_every_rendered_object_is_valid_for_kubernetes_1_34(objects):
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def test_it_is_the_local_overlay_with_mlserver_in_torchservess_place(objects, local):
    torchserve = {(kind, name) for kind, name in kind_names(local) if "torchserve" in name}
    assert ("Deployment", "torchserve") in torchserve
    assert kind_names(objects) == (kind_names(local) - torchserve) | MLSERVER_OBJECTS


def test_nothing_of_torchserve_is_left_not_even_a_setting_or_a_volume(objects):
    assert "torchserve" not in json.dumps(objects).lower()


def test_the_bridge_asks_mlserver_for_the_version_whose_labels_e2e_checks(objects):
    bridge = find(objects, "Deployment", "bridge")["spec"]["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable["value"] for variable in bridge["env"]}
    assert env["IOTPIPE_MODEL_SERVER"] == "mlserver"
    assert env["IOTPIPE_INFERENCE_PROTOCOL"] == "open-inference"
    assert env["IOTPIPE_MODEL_VERSION"] == model_version(Config().model_arch) == "20.3"
    config = find(objects, "ConfigMap", promises.configmap_name(objects, "iotpipe-config"))["data"]
    assert env["IOTPIPE_INFERENCE_URL"] == config["IOTPIPE_INFERENCE_URL"] == "http://mlserver:8080"


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def peer_allows(peers: list[dict], labels: dict) -> bool:
    """A rule's from/to admits a pod of this namespace with these labels (podSelector alone: this namespace)."""
    return any("namespaceSelector" not in peer and selects(peer.get("podSelector", {}), labels) for peer in peers)


def port_allows(ports: list[dict] | None, port: int) -> bool:
    return not ports or any(entry.get("port") == port for entry in ports)


def allowed(policies: list[dict], direction: str, pod: dict, peer: dict, port: int) -> bool:
    """NetworkPolicy semantics: open unless a policy of that direction selects the pod; then some rule must admit."""
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        policy
        for policy in policies
        if direction in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], pod)
    ]
    return not selecting or any(
        peer_allows(rule.get(peers, [{}]), peer) and port_allows(rule.get("ports"), port)
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def test_the_network_policies_let_the_bridge_reach_mlserver_inference_port_and_nobody_else(objects):
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    bridge_pod = find(objects, "Deployment", "bridge")["spec"]["template"]
    bridge = bridge_pod["metadata"]["labels"]
    consumer = find(objects, "Deployment", "consumer")["spec"]["template"]["metadata"]["labels"]
    mlserver = find(objects, "Deployment", "mlserver")["spec"]["template"]
    env = {variable["name"]: variable.get("value") for variable in bridge_pod["spec"]["containers"][0]["env"]}
    url = urlsplit(env["IOTPIPE_INFERENCE_URL"])
    service = find(objects, "Service", url.hostname)
    assert selects({"matchLabels": service["spec"]["selector"]}, mlserver["metadata"]["labels"])
    target = next(port["targetPort"] for port in service["spec"]["ports"] if port["port"] == url.port)
    ports = {port["name"]: port["containerPort"] for port in mlserver["spec"]["containers"][0]["ports"]}
    pod_port = ports[target]
    assert allowed(policies, "Egress", bridge, mlserver["metadata"]["labels"], pod_port)
    assert allowed(policies, "Ingress", mlserver["metadata"]["labels"], bridge, pod_port)
    assert not allowed(policies, "Ingress", mlserver["metadata"]["labels"], consumer, pod_port)


def test_the_inventory_deploys_the_overlay_with_exactly_the_images_it_runs(objects):
    variables = inventory_vars()
    assert variables["iotpipe_k8s_overlay"] == OVERLAY
    used = {image.rpartition(":")[0].removeprefix("localhost/iotpipe/") for image in own_images(objects)}
    assert set(variables["iotpipe_k8s_images"]) == used
    assert "mlserver" in used and "torchserve" not in used
    # The local-cluster inventory builds and imports what it deploys; e2e builds the same list first.
    assert yaml.safe_load(LOCAL_INVENTORY_VARS.read_text())["iotpipe_images_services"] == "{{ iotpipe_k8s_images }}"
    assert overlay_images(OVERLAY) == variables["iotpipe_k8s_images"]
    builds = yaml.safe_load(IMAGES_DEFAULTS.read_text())["iotpipe_images_builds"]
    for name in used:
        assert builds[name]["dockerfile"] == build_images.IMAGES[name].dockerfile, name


def test_every_image_is_built_here_tagged_and_never_pulled(objects):
    for image, policy in own_images(objects).items():
        name, _, tag = image.rpartition(":")
        assert name.startswith("localhost/iotpipe/") and tag and tag != "latest", image
        assert policy == "IfNotPresent", image


def test_the_requests_fit_the_node_with_three_bridges_and_five_cameras(objects):
    replicas = {f"{o['kind']}/{o['metadata']['name']}": o["spec"].get("replicas", 1) for o in objects if "spec" in o}
    replicas["Deployment/bridge"] = find(objects, "HorizontalPodAutoscaler", "bridge")["spec"]["maxReplicas"]
    replicas["Job/iotpipe-producers"] = CAMERAS
    totals = [pod_requests(spec) for name, spec in pod_specs(objects).items() for _ in range(replicas.get(name, 1))]
    cpu, memory = (sum(values) for values in zip(*totals, strict=True))
    assert cpu <= NODE_CPU, f"{cpu:.2f} CPUs requested"
    assert memory <= NODE_MEMORY_GIB, f"{memory:.2f} GiB requested"
    assert yaml.safe_load(LOCAL_INVENTORY_VARS.read_text())["local_cluster_addon_names"] == []


def test_no_secret_is_committed_and_the_local_inventory_makes_every_one_referenced(objects):
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert referenced_secrets(objects) <= set(yaml.safe_load(LOCAL_INVENTORY_VARS.read_text())["iotpipe_k8s_secrets"])


PROMISES = [
    promises.test_every_object_lands_in_namespace_iotpipe,
    promises.test_every_container_declares_requests_and_limits,
    promises.test_every_variable_a_container_refers_to_is_defined_before_it,
    promises.test_every_object_carries_the_recommended_labels,
    promises.test_every_long_running_workload_has_a_pod_disruption_budget,
    promises.test_application_settings_are_fields_of_the_iotpipe_configuration,
    promises.test_credentials_reach_containers_only_from_secrets,
]


@pytest.mark.parametrize("promise", PROMISES, ids=lambda promise: promise.__name__.removeprefix("test_"))
def test_it_keeps_the_promises_of_every_overlay(objects, promise):
    promise({OVERLAY: objects}, OVERLAY)


def test_every_pod_runs_as_non_root_without_capabilities(objects, tmp_path):
    promises.test_every_pod_runs_as_non_root_without_capabilities_under_runtime_default_seccomp(
        {OVERLAY: objects}, OVERLAY, tmp_path
    )


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_playbook_passes_the_syntax_check_with_both_inventories(playbook):
    ansible_playbook("--syntax-check", *inventory_args(OVERLAY), str(ANSIBLE / playbook))


# -- cluster/e2e.py ------------------------------------------------------------------------------------------


def test_e2e_deploys_local_mlserver_after_the_local_cluster_inventory():
    assert OVERLAY_INVENTORIES[OVERLAY] == ("local-cluster", "local-cluster-mlserver")
    assert all((INVENTORIES / name / "hosts.yml").is_file() for name in OVERLAY_INVENTORIES[OVERLAY])


def test_e2e_builds_for_the_other_overlays_what_it_built_before_every_image_but_the_alternatives():
    default = [image.name for image in build_images.selected([])]
    for overlay in ("local", "local-prod"):
        assert sorted(overlay_images(overlay)) == sorted(default)


def test_e2e_counts_the_documents_of_versions_whose_labels_it_does_not_check():
    documents = [{"model_version": version} for version in ("20.3", "20.3", "56.3")]
    assert other_versions(documents, "20.3") == {"56.3": 1}
    assert not other_versions(documents[:2], "20.3")
