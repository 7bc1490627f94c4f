"""k8s/overlays/local-prod, ansible/inventories/local-cluster-prod and the add-ons of the local cluster
(cluster/addons.py, the cluster_addons role), offline: what `python -m cluster.e2e --overlay local-prod` relies on."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import jinja2
import pytest
import yaml

from cluster import addons
from cluster.config import KEDA_VERSION
from cluster.e2e import INVENTORIES, OVERLAY_INVENTORIES, inventory_args
from tests.deploy.conftest import ANSIBLE, K8S, ROOT, find, kustomize_build, pod_specs, properties
from tests.deploy.test_ansible import PLAYBOOKS, ansible_playbook
from tests.deploy.test_kubernetes_schemas import schema_errors

LOCAL_PROD = K8S / "overlays" / "local-prod"
PROD_INVENTORY_VARS = ANSIBLE / "inventories" / "local-cluster-prod" / "group_vars" / "all" / "main.yml"
LOCAL_INVENTORY_VARS = ANSIBLE / "inventories" / "local-cluster" / "group_vars" / "all" / "main.yml"
ROLE = ANSIBLE / "roles" / "cluster_addons"
# The node of `make cluster`: 2 CPUs, 24 GiB, nothing reserved (cluster/render.py's kubelet configuration).
NODE_CPU = 2.0
NODE_MEMORY_GIB = 24.0
# Requests of the add-ons in upstream's manifests (metrics-server v0.8.0 manifests/base, KEDA config/minimal):
# metrics-server 100m/200Mi, KEDA's operator and metrics server 100m/100Mi each.
ADDON_REQUESTS = (0.3, 0.4)
CAMERAS = 5


@pytest.fixture(scope="module")
def local_prod() -> list[dict]:
    return kustomize_build(LOCAL_PROD)


@pytest.fixture(scope="module")
def prod() -> list[dict]:
    return kustomize_build(K8S / "overlays" / "prod")


def test_every_rendered_object_is_valid_for_kubernetes_1_34(local_prod):
    errors = [error for obj in local_prod for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def kafka_config(objects: list[dict]) -> dict[str, str]:
    configmap = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("kafka-config")
    )
    return properties(configmap["data"]["server.properties"])


def iotpipe_config(objects: list[dict]) -> dict[str, str]:
    return next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("iotpipe-config"))[
        "data"
    ]


def test_it_is_prod_three_sasl_ssl_brokers_keda_and_monitors(local_prod, prod):
    assert find(local_prod, "StatefulSet", "kafka")["spec"]["replicas"] == 3
    assert kafka_config(local_prod) == kafka_config(prod)
    assert kafka_config(local_prod)["min.insync.replicas"] == "2"
    assert kafka_config(local_prod)["default.replication.factor"] == "3"
    assert iotpipe_config(local_prod) == iotpipe_config(prod)
    assert iotpipe_config(local_prod)["IOTPIPE_SECURITY_PROTOCOL"] == "SASL_SSL"
    for kind, name in (
        ("ScaledObject", "bridge"),
        ("TriggerAuthentication", "kafka-keda"),
        ("PodMonitor", "bridge"),
        ("ServiceMonitor", "torchserve"),
    ):
        assert find(local_prod, kind, name) == find(prod, kind, name)
    assert {(o["kind"], o["metadata"]["name"]) for o in local_prod} == {
        (o["kind"], o["metadata"]["name"]) for o in prod
    }


def test_only_images_requests_volumes_and_the_couchdb_stand_in_differ_from_prod(local_prod, prod):
    def kafka_container(objects: list[dict]) -> dict:
        spec = find(objects, "StatefulSet", "kafka")["spec"]["template"]["spec"]
        return next(c for c in spec["containers"] if c["name"] == "kafka")

    ours, theirs = kafka_container(local_prod), kafka_container(prod)

    def environment(container: dict) -> dict[str, dict]:
        return {e["name"]: e for e in container["env"] if e["name"] != "KAFKA_HEAP_OPTS"}

    assert environment(ours) == environment(theirs)
    assert ours["volumeMounts"] == theirs["volumeMounts"]


def test_the_stand_in_images_of_the_local_overlay_are_used_and_never_pulled(local_prod):
    images = {
        container["image"]: container["imagePullPolicy"]
        for spec in pod_specs(local_prod).values()
        for container in [*spec.get("initContainers", []), *spec["containers"]]
    }
    names = {image.rpartition(":")[0] for image in images}
    assert {"localhost/iotpipe/kafka", "localhost/iotpipe/pouchdb-server"} <= names
    assert all(name.startswith("localhost/iotpipe/") for name in names), names
    assert set(images.values()) == {"IfNotPresent"}


def test_the_couchdb_stand_in_patch_is_the_local_overlays(local_prod):
    def body(path: Path) -> str:
        return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))

    assert body(LOCAL_PROD / "couchdb.yaml") == body(K8S / "overlays" / "local" / "couchdb.yaml")


def quantity(value: str) -> float:
    """CPUs, or GiB for memory."""
    units = {"m": 1e-3, "Ki": 2**-20, "Mi": 2**-10, "Gi": 1.0}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def pod_requests(spec: dict) -> tuple[float, float]:
    """What the scheduler reserves for a pod: its containers' sum, or its largest init container if more."""

    def total(containers: list[dict], resource: str, combine) -> float:
        return combine([quantity(c["resources"]["requests"][resource]) for c in containers] or [0.0])

    return tuple(
        max(total(spec["containers"], resource, sum), total(spec.get("initContainers", []), resource, max))
        for resource in ("cpu", "memory")
    )


def requests_at_peak(objects: list[dict]) -> tuple[float, float]:
    """CPU and GiB requested with the bridge at KEDA's maximum and the five cameras of `make cluster-test`."""
    replicas = {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"].get("replicas", 1)
        for o in objects
        if o["kind"] in {"StatefulSet", "Deployment"}
    }
    replicas["Deployment/bridge"] = find(objects, "ScaledObject", "bridge")["spec"]["maxReplicaCount"]
    replicas["Job/iotpipe-producers"] = CAMERAS
    cpu = memory = 0.0
    for name, spec in pod_specs(objects).items():
        pod_cpu, pod_memory = pod_requests(spec)
        cpu += pod_cpu * replicas.get(name, 1)
        memory += pod_memory * replicas.get(name, 1)
    return cpu, memory


def test_the_requests_fit_one_node_of_2_cpus_and_24_gib_with_the_add_ons(local_prod, prod):
    cpu, memory = requests_at_peak(local_prod)
    assert cpu + ADDON_REQUESTS[0] <= NODE_CPU, f"{cpu:.2f} CPUs requested"
    assert memory + ADDON_REQUESTS[1] <= NODE_MEMORY_GIB, f"{memory:.2f} GiB requested"
    assert requests_at_peak(prod)[0] > NODE_CPU  # why the overlay exists


def test_the_latency_volume_and_the_kafka_volumes_fit_local_path(local_prod):
    assert find(local_prod, "PersistentVolumeClaim", "iotpipe-latency")["spec"]["accessModes"] == ["ReadWriteOnce"]
    for claim in find(local_prod, "StatefulSet", "kafka")["spec"]["volumeClaimTemplates"]:
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


# -- ansible/inventories/local-cluster-prod -------------------------------------------------------------------


def referenced_secrets(objects: list[dict]) -> set[str]:
    text = json.dumps(objects)
    names = set(re.findall(r'"secretKeyRef": \{[^}]*"name": "([^"]+)"', text))
    names |= set(re.findall(r'"secretName": "([^"]+)"', text))
    for auth in (o for o in objects if o["kind"] == "TriggerAuthentication"):
        names |= {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    committed = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    return names - committed


def test_the_local_overlay_needs_no_add_on_and_local_prod_gets_metrics_server_and_keda():
    assert yaml.safe_load(LOCAL_INVENTORY_VARS.read_text())["local_cluster_addon_names"] == []
    assert yaml.safe_load(PROD_INVENTORY_VARS.read_text())["local_cluster_addon_names"] == ["metrics-server", "keda"]


def test_the_inventory_makes_every_secret_that_local_prod_references(local_prod):
    variables = yaml.safe_load(PROD_INVENTORY_VARS.read_text())
    assert variables["iotpipe_k8s_overlay"] == "local-prod"
    made = set(variables["iotpipe_k8s_secrets"]) | set(variables["iotpipe_k8s_binary_secrets"])
    assert referenced_secrets(local_prod) == made


def test_the_inventory_gives_the_keys_that_prod_reads_from_its_secrets(local_prod):
    variables = yaml.safe_load(PROD_INVENTORY_VARS.read_text())
    keys = {name: set(values) for name, values in variables["iotpipe_k8s_secrets"].items()}
    keys |= {name: set(values) for name, values in variables["iotpipe_k8s_binary_secrets"].items()}
    text = json.dumps(local_prod)
    for name, key in re.findall(r'"secretKeyRef": \{"name": "([^"]+)", "key": "([^"]+)"', text):
        assert key in keys[name], (name, key)
    for auth in (o for o in local_prod if o["kind"] == "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in keys[ref["name"]], ref


def test_the_kafka_tls_material_is_made_once_with_the_names_the_readme_asks_for(tmp_path):
    script = LOCAL_PROD / "kafka-tls.sh"
    made = json.loads(subprocess.run([str(script), str(ROOT), str(tmp_path)], capture_output=True, check=True).stdout)
    again = json.loads(subprocess.run([str(script), str(ROOT), str(tmp_path)], capture_output=True, check=True).stdout)
    assert made == again
    certificate = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "broker.crt"), "-noout", "-subject", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN = kafka-broker" in certificate or "CN=kafka-broker" in certificate
    assert "DNS:*.kafka-headless.iotpipe.svc, DNS:kafka.iotpipe.svc" in certificate
    store = str(tmp_path / "truststore.p12")
    trusted = subprocess.run(
        ["keytool", "-list", "-storetype", "PKCS12", "-storepass", made["tls_password"], "-keystore", store],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "trustedCertEntry" in trusted
    assert made["ca_pem"] == (tmp_path / "ca.crt").read_text()


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_playbook_passes_the_syntax_check_with_both_inventories(playbook):
    ansible_playbook("--syntax-check", *inventory_args("local-prod"), str(ANSIBLE / playbook))


def test_e2e_deploys_local_prod_with_both_inventories_in_order():
    assert OVERLAY_INVENTORIES["local-prod"] == ("local-cluster", "local-cluster-prod")
    assert inventory_args("local-prod")[1::2] == [str(INVENTORIES / name) for name in OVERLAY_INVENTORIES["local-prod"]]
    for names in OVERLAY_INVENTORIES.values():
        assert all((INVENTORIES / name / "hosts.yml").is_file() for name in names)
    assert set(OVERLAY_INVENTORIES) <= {path.name for path in (K8S / "overlays").iterdir()}


# -- add-ons: cluster/addons.py and the cluster_addons role ---------------------------------------------------


def test_keda_is_the_release_whose_crds_the_role_applies_and_the_schemas_come_from():
    deploy_mk = (ROOT / "deploy.mk").read_text()
    assert re.search(r"^KEDA_VERSION := (\S+)$", deploy_mk, re.M).group(1) == KEDA_VERSION
    crd_modules = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["cluster_addons_crd_modules"]
    assert addons.KEDA.module in {entry["module"] for entry in crd_modules}


def test_the_local_inventory_applies_each_add_on_from_its_go_module_with_the_local_images():
    variables = yaml.safe_load(LOCAL_INVENTORY_VARS.read_text())
    assert "-m cluster.addons describe" in variables["local_cluster_addons"]
    assert "-m cluster.addons install ' ~ (local_cluster_addon_names" in variables["cluster_addons_images_command"]
    entries = {entry["name"]: entry for entry in variables["local_cluster_addon_manifests"]}
    assert set(entries) == set(addons.ADDON_NAMES)
    for name, entry in entries.items():
        for key in ("module", "path", "images"):
            assert name in entry[key] and key in entry[key], entry


def test_each_add_on_image_is_a_local_tagged_image_of_upstreams_name():
    described = addons.describe()
    for addon in addons.ADDONS:
        for image in addon.images:
            assert image.reference.startswith("localhost/iotpipe-cluster/")
            assert image.reference.rpartition(":")[2] == addon.module.rpartition("@")[2]
            assert described[addon.name]["images"][image.upstream] == image.reference


def render_role_kustomization(addon: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,  # as Ansible: an undefined variable is an error
    )
    environment.filters["to_json"] = json.dumps
    template = environment.get_template("kustomization.yaml.j2")
    return template.render(ansible_managed="Ansible managed", cluster_addons_addon=addon)


def test_the_role_sets_the_images_and_applies_the_patches_of_an_add_on(tmp_path):
    """The local inventory's own entries, on a stand-in for upstream's manifest."""
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "keda-operator", "namespace": "keda"},
        "spec": {
            "selector": {"matchLabels": {"app": "keda-operator"}},
            "template": {
                "metadata": {"labels": {"app": "keda-operator"}},
                "spec": {
                    "containers": [
                        {"name": "keda-operator", "image": "ghcr.io/kedacore/keda:main", "imagePullPolicy": "Always"}
                    ]
                },
            },
        },
    }
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    entry = next(
        entry
        for entry in yaml.safe_load(LOCAL_INVENTORY_VARS.read_text())["local_cluster_addon_manifests"]
        if entry["name"] == "keda"
    )
    entry = entry | {
        "module": addons.KEDA.module,
        "path": addons.KEDA.manifests,
        "images": addons.describe()["keda"]["images"],
    }
    (tmp_path / "kustomization.yaml").write_text(render_role_kustomization(entry))
    container = kustomize_build(tmp_path)[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"localhost/iotpipe-cluster/keda:{KEDA_VERSION}"
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_an_add_on_from_a_manifest_file_needs_no_module_images_or_patches():
    rendered = yaml.safe_load(render_role_kustomization({"name": "x", "src": "https://example.com/x.yaml"}))
    assert rendered == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["manifest.yaml"],
    }


def test_the_wrapper_module_keeps_upstreams_version_pins_and_drops_local_paths():
    replaces = [
        {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "k8s.io/api", "Version": "v0.35.5"}},
        {"Old": {"Path": "example.com/x", "Version": "v1.0.0"}, "New": {"Path": "example.com/y", "Version": "v1.1.0"}},
        {"Old": {"Path": "example.com/local"}, "New": {"Path": "./local"}},
    ]
    go_mod = addons.render_pinned_go_mod("keda", "1.26.0", "github.com/kedacore/keda/v2", "v2.20.2", replaces)
    assert "require github.com/kedacore/keda/v2 v2.20.2" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.35.5" in go_mod
    assert "\texample.com/x v1.0.0 => example.com/y v1.1.0" in go_mod
    assert "./local" not in go_mod


def test_an_add_on_image_holds_its_binaries_a_tmp_and_a_nonroot_user(tmp_path):
    binary = tmp_path / "keda"
    binary.write_bytes(b"\x7fELF")
    with tarfile.open(fileobj=io.BytesIO(addons.rootfs_tar([binary]))) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert members["keda"].mode == 0o755 and members["keda"].uid == 0
        assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
        passwd = tar.extractfile("etc/passwd").read().decode()
    assert f"nonroot:x:{addons.NONROOT}:{addons.NONROOT}:" in passwd
