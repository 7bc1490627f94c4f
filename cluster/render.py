"""The node's configuration files, rendered from ClusterConfig: pure functions, no I/O (unit-tested).
Kubernetes reads JSON wherever it reads YAML, so the Kubernetes files are JSON built from dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.config import (
    APISERVER_PORT,
    CLUSTER_DOMAIN,
    CNI_BIN_DIR,
    DNS_SERVICE_IP,
    HELPER_IMAGE,
    KUBERNETES_SERVICE_IP,
    NODE_ADDRESS,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    ClusterConfig,
)

CGROUP_ROOT = "/iotpipe-cluster"
LOCAL_PATH_NAMESPACE = "local-path-storage"
LOCAL_PATH_SERVICE_ACCOUNT = "local-path-provisioner"
LOCAL_PATH_CONFIGMAP = "local-path-config"
STORAGE_CLASS = "local-path"
# Identities of the components that run as processes (client certificates: CN user, O group).
IDENTITIES = {
    "admin": ("kubernetes-admin", "system:masters"),
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kube-proxy": ("system:kube-proxy", ""),
    "coredns": ("system:coredns", ""),
    "local-path-provisioner": ("system:local-path-provisioner", ""),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
    # The API server's identity toward aggregated API servers (metrics-server, KEDA's metrics apiserver).
    "front-proxy-client": ("front-proxy-client", ""),
}


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def apiserver_url() -> str:
    return f"https://{NODE_ADDRESS}:{APISERVER_PORT}"


def kubeconfig(config: ClusterConfig, identity: str) -> dict[str, Any]:
    pki = config.pki_dir
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "iotpipe", "cluster": {"server": apiserver_url(), "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate": str(pki / f"{identity}.crt"),
                    "client-key": str(pki / f"{identity}.key"),
                },
            }
        ],
        "contexts": [{"name": "iotpipe", "context": {"cluster": "iotpipe", "user": identity}}],
        "current-context": "iotpipe",
    }


def apiserver_sans() -> list[str]:
    names = [f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "kubernetes.default.svc", "kubernetes.default", "kubernetes"]
    return [f"DNS:{name}" for name in names] + [f"IP:{ip}" for ip in (KUBERNETES_SERVICE_IP, NODE_ADDRESS, "127.0.0.1")]


def containerd_toml(config: ClusterConfig) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    unused = ", ".join(f'"io.containerd.snapshotter.v1.{name}"' for name in ("aufs", "btrfs", "devmapper", "zfs"))
    return f"""version = 2
root = "{config.data_dir / "containerd"}"
state = "/run/containerd"
disabled_plugins = [{unused}]

[grpc]
  address = "{config.containerd_socket}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM has no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, so every sandbox would fail.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{config.etc_dir / "cni"}"
"""


def cni_conflist() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "iotpipe",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_subnet()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def cni_loopback() -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


def pod_subnet() -> str:
    """The one node's share of POD_CIDR: its first /24."""
    network = POD_CIDR.split("/")[0].rsplit(".", 2)[0]
    return f"{network}.0.0/24"


def kubelet_config(config: ClusterConfig) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(config.pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "address": NODE_ADDRESS,
        "healthzBindAddress": NODE_ADDRESS,
        "cgroupDriver": "cgroupfs",
        # Every cgroup of the cluster lives under this one: teardown removes one tree.
        "cgroupRoot": CGROUP_ROOT,
        # This machine runs cgroup v1 (kubelet 1.35 would refuse it).
        "failCgroupV1": False,
        "failSwapOn": False,
        # Images are imported, never pulled: garbage-collecting one would lose it for good.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "containerRuntimeEndpoint": f"unix://{config.containerd_socket}",
        "resolvConf": str(config.etc_dir / "resolv.conf"),
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
    }


def kube_proxy_config(config: ClusterConfig) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_ADDRESS,
        "healthzBindAddress": f"{NODE_ADDRESS}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clientConnection": {"kubeconfig": str(config.etc_dir / "kube-proxy.kubeconfig")},
        # Zero: kube-proxy leaves the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def corefile(config: ClusterConfig) -> str:
    return f""".:53 {{
    errors
    health {NODE_ADDRESS}:8080
    ready {NODE_ADDRESS}:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {config.etc_dir / "coredns.kubeconfig"} iotpipe
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def resolv_conf() -> str:
    """The node has no upstream DNS: pods get the cluster's and nothing else."""
    return f"nameserver {DNS_SERVICE_IP}\n"


def local_path_config(config: ClusterConfig) -> dict[str, Any]:
    return {
        "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(config.data_dir / "local-path")]}]
    }


def manifest(*documents: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(documents)}


def cluster_role(name: str, rules: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules},
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]


def rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def coredns_manifests() -> list[dict[str, Any]]:
    """RBAC for CoreDNS (a process on the node) and a selector-less kube-dns Service pointing at it."""
    read = ["list", "watch"]
    rules = [
        rule([""], ["endpoints", "services", "pods", "namespaces"], read),
        rule(["discovery.k8s.io"], ["endpointslices"], read),
    ]
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {
            "clusterIP": DNS_SERVICE_IP,
            "ports": [{"name": name, "port": 53, "targetPort": 53, "protocol": protocol} for name, protocol in ports],
        },
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-node",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "iotpipe-cluster",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_ADDRESS], "conditions": {"ready": True}, "nodeName": NODE_NAME}],
        "ports": [{"name": name, "port": 53, "protocol": protocol} for name, protocol in ports],
    }
    return [*cluster_role("system:coredns", rules, IDENTITIES["coredns"][0]), service, endpoints]


def local_path_manifests(config: ClusterConfig) -> list[dict[str, Any]]:
    """What local-path-provisioner (a process on the node) needs in the cluster: its namespace, the
    service account and scripts of its helper pods, its RBAC, and the default StorageClass."""
    everything = ["get", "list", "watch", "create", "update", "patch", "delete"]
    rules = [
        rule([""], ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"], ["get", "list", "watch"]),
        rule([""], ["persistentvolumes", "pods"], everything),
        rule([""], ["events"], ["create", "patch"]),
        rule(["storage.k8s.io"], ["storageclasses"], ["get", "list", "watch"]),
        rule(["coordination.k8s.io"], ["leases"], everything),
        rule([""], ["endpoints"], everything),
    ]
    scripts = {
        "config.json": to_json(local_path_config(config)),
        "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
        "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
        "helperPod.yaml": to_json(local_path_helper_pod()),
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LOCAL_PATH_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": LOCAL_PATH_SERVICE_ACCOUNT, "namespace": LOCAL_PATH_NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": LOCAL_PATH_CONFIGMAP, "namespace": LOCAL_PATH_NAMESPACE},
            "data": scripts,
        },
        *cluster_role("system:local-path-provisioner", rules, IDENTITIES["local-path-provisioner"][0]),
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]


def local_path_helper_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "helper-pod", "image": HELPER_IMAGE, "imagePullPolicy": "Never"}],
        },
    }


def bootstrap_manifests(config: ClusterConfig) -> dict[str, Any]:
    return manifest(*coredns_manifests(), *local_path_manifests(config))


def files(config: ClusterConfig) -> dict[Path, str]:
    """Every configuration file of the node, by path."""
    etc = config.etc_dir
    rendered = {
        etc / "containerd.toml": containerd_toml(config),
        etc / "cni" / "10-iotpipe.conflist": to_json(cni_conflist()),
        etc / "cni" / "99-loopback.conf": to_json(cni_loopback()),
        etc / "kubelet.json": to_json(kubelet_config(config)),
        etc / "kube-proxy.json": to_json(kube_proxy_config(config)),
        etc / "Corefile": corefile(config),
        etc / "resolv.conf": resolv_conf(),
        etc / "local-path" / "config.json": to_json(local_path_config(config)),
        etc / "local-path" / "helperPod.yaml": to_json(local_path_helper_pod()),
        etc / "bootstrap.json": to_json(bootstrap_manifests(config)),
    }
    for identity in IDENTITIES:
        rendered[etc / f"{identity}.kubeconfig"] = to_json(kubeconfig(config, identity))
    return rendered
