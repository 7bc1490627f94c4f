"""k8s/overlays/local and ansible/inventories/local-cluster, offline: what `make cluster-test` relies on,
and the pure logic of cluster/e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.config import ClusterConfig
from cluster.e2e import recap_changed, tally
from tests.deploy.conftest import ANSIBLE, ROOT, find, pod_specs

# The project's images and the stand-ins of docker/README.md for apache/kafka and couchdb.
LOCAL_IMAGES = {"torchserve", "bridge", "consumer", "producer", "kafka", "pouchdb-server"}
INVENTORY_VARS = ANSIBLE / "inventories" / "local-cluster" / "group_vars" / "all" / "main.yml"


def inventory_vars() -> dict:
    return yaml.safe_load(INVENTORY_VARS.read_text())


def local_images(rendered: dict) -> list[dict]:
    return [
        container
        for spec in pod_specs(rendered["local"]).values()
        for container in [*spec.get("initContainers", []), *spec["containers"]]
    ]


def test_every_local_image_is_built_here_tagged_and_never_pulled(rendered):
    for container in local_images(rendered):
        name, _, tag = container["image"].rpartition(":")
        assert name.removeprefix("localhost/iotpipe/") in LOCAL_IMAGES, container["image"]
        assert tag and tag != "latest", container["image"]
        assert container["imagePullPolicy"] == "IfNotPresent", container["image"]


def test_the_inventory_sets_the_tag_of_every_local_image(rendered):
    used = {
        container["image"].rpartition(":")[0].removeprefix("localhost/iotpipe/") for container in local_images(rendered)
    }
    assert set(inventory_vars()["iotpipe_k8s_images"]) == used == LOCAL_IMAGES


def test_the_inventory_deploys_the_local_overlay_with_the_clusters_kubeconfig():
    variables = inventory_vars()
    assert variables["iotpipe_k8s_overlay"] == "local"
    kubeconfig = ClusterConfig.from_env(ROOT).kubeconfig.relative_to(ROOT)
    assert variables["local_cluster_kubeconfig"] == "{{ local_cluster_repo_dir }}/" + str(kubeconfig)


def test_pouchdb_server_is_probed_on_its_welcome_and_gets_no_service_links(rendered):
    """No /_up; and the Service couchdb would set COUCHDB_PORT=tcp://..., the image's port variable."""
    spec = find(rendered["local"], "StatefulSet", "couchdb")["spec"]["template"]["spec"]
    couchdb = spec["containers"][0]
    assert couchdb["image"].startswith("localhost/iotpipe/pouchdb-server:")
    assert couchdb["readinessProbe"]["httpGet"]["path"] == couchdb["livenessProbe"]["httpGet"]["path"] == "/"
    assert spec["enableServiceLinks"] is False


def test_the_local_overlay_has_one_broker_and_no_keda_or_monitoring(rendered):
    assert find(rendered["local"], "StatefulSet", "kafka")["spec"]["replicas"] == 1
    kinds = {document["kind"] for document in rendered["local"]}
    assert not kinds & {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PodMonitor"}


# -- cluster/e2e.py ------------------------------------------------------------------------------------------

RECAP = """
PLAY RECAP *********************************************************************
localhost                  : ok=14   changed=0    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
node                       : ok=3    changed=2    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
"""


def test_the_rerun_counts_the_changes_of_every_host_in_the_recap():
    assert recap_changed("TASK [x] changed=7\n" + RECAP) == 2


def document(doc_id: str, subject: str, label: str = "cat", producer: str = "camera-0") -> dict:
    return {"_id": doc_id, "producer_id": producer, "subject": subject, "label": label}


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        ([document("a", "cat/1.jpg"), document("b", "cat/2.jpg")], (2, 2, 0, 0, 0)),
        ([document("a", "cat/1.jpg")], (2, 1, 1, 0, 0)),
        # the camera sent one picture twice (a retried pod): a duplicate, and a document of no sent image
        ([document("a", "cat/1.jpg"), document("b", "cat/2.jpg"), document("c", "cat/2.jpg")], (2, 2, 0, 1, 1)),
    ],
)
def test_tally_counts_lost_duplicate_and_unexpected_documents(documents, expected):
    result = tally({"a", "b"}, documents, {"cat/1.jpg": "cat", "cat/2.jpg": "cat"})
    assert (result.sent, result.stored, result.lost, result.duplicates, result.unexpected) == expected
    assert result.passed == (expected[2:] == (0, 0, 0))


def test_tally_reports_labels_that_differ_from_the_offline_ones():
    result = tally({"a"}, [document("a", "cat/1.jpg", label="dog")], {"cat/1.jpg": "cat"})
    assert result.wrong_labels == {"cat/1.jpg": ("dog", "cat")} and not result.passed
    assert result.line(0) == "cluster-test: sent 1, stored 1, lost 0, duplicates 0, deploy rerun changed=0"


def test_ci_runs_the_cluster_path_after_the_test_suite():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [line.split()[1] for line in lines if line.startswith("make ")]
    assert steps == ["setup", "test", "cluster-test"]
    cluster_build = next(n for n, line in enumerate(lines) if "-m cluster build" in line)
    assert cluster_build < next(n for n, line in enumerate(lines) if line.startswith("make test"))
    assert Path(ROOT / "cluster" / "e2e.py").is_file()
