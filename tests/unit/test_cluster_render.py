"""The local cluster's configuration files (cluster/render.py): what each component is told."""

import json
from pathlib import Path

from cluster.build import kubernetes_ldflags, major_fits, render_wrapper_go_mod, staging_version
from cluster.components import COMPONENTS
from cluster.config import DNS_SERVICE_IP, HELPER_IMAGE, NODE_ADDRESS, PAUSE_IMAGE, ClusterConfig
from cluster.render import IDENTITIES, apiserver_sans, files, kubelet_config, pod_subnet

CONFIG = ClusterConfig(root=Path("/tmp/iotpipe-cluster-test"))


def test_every_kubernetes_file_is_valid_json_and_every_identity_has_a_kubeconfig():
    rendered = files(CONFIG)
    for path, text in rendered.items():
        if path.name not in ("containerd.toml", "Corefile", "resolv.conf"):
            json.loads(text)
    for identity in IDENTITIES:
        kubeconfig = json.loads(rendered[CONFIG.etc_dir / f"{identity}.kubeconfig"])
        assert kubeconfig["users"][0]["user"]["client-certificate"] == str(CONFIG.pki_dir / f"{identity}.crt")
        assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{NODE_ADDRESS}:6443"


def test_kubelet_runs_on_cgroup_v1_without_pulling_or_collecting_images():
    kubelet = kubelet_config(CONFIG)
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["failCgroupV1"] is False
    assert kubelet["imageGCHighThresholdPercent"] == 100
    assert kubelet["clusterDNS"] == [DNS_SERVICE_IP]


def test_containerd_uses_the_local_pause_image_and_cannot_trip_on_oom_score_adj():
    toml = files(CONFIG)[CONFIG.etc_dir / "containerd.toml"]
    assert f'sandbox_image = "{PAUSE_IMAGE}"' in toml
    assert "restrict_oom_score_adj = true" in toml
    assert "SystemdCgroup = false" in toml
    assert f'root = "{CONFIG.data_dir / "containerd"}"' in toml


def test_kube_proxy_leaves_host_conntrack_sysctls_alone():
    proxy = json.loads(files(CONFIG)[CONFIG.etc_dir / "kube-proxy.json"])
    assert proxy["conntrack"]["maxPerCore"] == 0 and proxy["conntrack"]["min"] == 0


def test_the_apiserver_certificate_names_the_service_and_the_node_address():
    sans = apiserver_sans()
    assert "DNS:kubernetes.default.svc.cluster.local" in sans
    assert f"IP:{NODE_ADDRESS}" in sans


def test_bootstrap_points_kube_dns_at_the_node_and_installs_a_default_storage_class():
    items = json.loads(files(CONFIG)[CONFIG.etc_dir / "bootstrap.json"])["items"]
    by_kind = {(item["kind"], item["metadata"]["name"]): item for item in items}
    slice_ = by_kind[("EndpointSlice", "kube-dns-node")]
    assert slice_["endpoints"][0]["addresses"] == [NODE_ADDRESS]
    assert by_kind[("Service", "kube-dns")]["spec"]["clusterIP"] == DNS_SERVICE_IP
    storage_class = by_kind[("StorageClass", "local-path")]
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    helper = json.loads(by_kind[("ConfigMap", "local-path-config")]["data"]["helperPod.yaml"])
    assert helper["spec"]["containers"][0]["image"] == HELPER_IMAGE


def test_pods_get_the_first_slash_24_of_the_pod_cidr():
    assert pod_subnet() == "10.204.0.0/24"


def test_every_component_command_names_only_files_the_cluster_renders_or_builds():
    for component in COMPONENTS:
        command = component.command(CONFIG)
        assert command[0] == "containerd" or command[0].startswith(str(CONFIG.bin_dir)), component.name


def test_the_wrapper_module_pins_every_replaced_module_to_the_published_version():
    go_mod = render_wrapper_go_mod("kubernetes", "1.24.0", "k8s.io/kubernetes", "v1.34.4", ["k8s.io/api"], "v0.34.4")
    assert "require k8s.io/kubernetes v1.34.4" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in go_mod
    assert staging_version() == "v0.34.4"
    assert "gitVersion=v1.34.4" in kubernetes_ldflags() and "gitMinor=34" in kubernetes_ldflags()


def test_only_modules_that_can_carry_the_version_are_pinned_to_it():
    assert major_fits("go.etcd.io/etcd/api/v3", "v3.6.4")
    assert not major_fits("go.etcd.io/etcd", "v3.6.4")
    assert major_fits("k8s.io/api", "v0.34.4")
    assert not major_fits("k8s.io/something/v2", "v0.34.4")
