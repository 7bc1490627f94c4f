"""The cluster's processes, in start order: how each is started and how its health is asked."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from cluster.config import (
    APISERVER_PORT,
    HELPER_IMAGE,
    NODE_ADDRESS,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    ClusterConfig,
)
from cluster.render import LOCAL_PATH_CONFIGMAP, LOCAL_PATH_NAMESPACE, LOCAL_PATH_SERVICE_ACCOUNT

# The self-signed serving certificates of controller-manager and scheduler, asked only for /healthz.
UNVERIFIED = ssl._create_unverified_context()


@dataclass(frozen=True)
class Component:
    name: str
    command: Callable[[ClusterConfig], list[str]]
    health_url: str  # an HTTP(S) endpoint on the node address; empty: asked through the node (containerd)
    start_timeout_s: float = 60.0


def http_ok(url: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(
            url, timeout=timeout_s, context=UNVERIFIED if url.startswith("https") else None
        ) as r:
            return r.status == 200, f"{url} {r.status}"
    except urllib.error.HTTPError as error:
        return False, f"{url} {error.code}"
    except (OSError, urllib.error.URLError) as error:
        return False, f"{url} {getattr(error, 'reason', error)}"


def etcd(c: ClusterConfig) -> list[str]:
    peer, client = "http://127.0.0.1:2380", "http://127.0.0.1:2379"
    return [str(c.binary("etcd")), f"--name={NODE_NAME}", f"--data-dir={c.data_dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={NODE_NAME}={peer}", f"--listen-metrics-urls=http://{NODE_ADDRESS}:2381",
            "--log-level=warn"]  # fmt: skip


def apiserver(c: ClusterConfig) -> list[str]:
    pki = c.pki_dir
    return [str(c.binary("kube-apiserver")), "--etcd-servers=http://127.0.0.1:2379",
            f"--advertise-address={NODE_ADDRESS}", f"--secure-port={APISERVER_PORT}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer: requests proxied to metrics-server and KEDA carry the caller in headers,
            # vouched for by this client certificate (one CA here; kubeadm makes a separate front-proxy CA).
            f"--requestheader-client-ca-file={pki / 'ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}", "--enable-aggregator-routing=true",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--allow-privileged=true", "--profiling=false"]  # fmt: skip


def controller_manager(c: ClusterConfig) -> list[str]:
    kubeconfig = c.etc_dir / "controller-manager.kubeconfig"
    return [str(c.binary("kube-controller-manager")), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={NODE_ADDRESS}", "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={c.pki_dir / 'sa.key'}", f"--root-ca-file={c.pki_dir / 'ca.crt'}",
            f"--cluster-cidr={POD_CIDR}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false"]  # fmt: skip


def scheduler(c: ClusterConfig) -> list[str]:
    kubeconfig = c.etc_dir / "scheduler.kubeconfig"
    return [str(c.binary("kube-scheduler")), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={NODE_ADDRESS}", "--leader-elect=false", "--profiling=false"]  # fmt: skip


def containerd(c: ClusterConfig) -> list[str]:
    return ["containerd", "--config", str(c.etc_dir / "containerd.toml")]


def kubelet(c: ClusterConfig) -> list[str]:
    return [str(c.binary("kubelet")), f"--config={c.etc_dir / 'kubelet.json'}",
            f"--kubeconfig={c.etc_dir / 'kubelet.kubeconfig'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_ADDRESS}"]  # fmt: skip


def kube_proxy(c: ClusterConfig) -> list[str]:
    return [str(c.binary("kube-proxy")), f"--config={c.etc_dir / 'kube-proxy.json'}"]


def coredns(c: ClusterConfig) -> list[str]:
    return [str(c.binary("coredns")), "-conf", str(c.etc_dir / "Corefile")]


def local_path_provisioner(c: ClusterConfig) -> list[str]:
    etc = c.etc_dir / "local-path"
    return [str(c.binary("local-path-provisioner")), "start",
            f"--kubeconfig={c.etc_dir / 'local-path-provisioner.kubeconfig'}",
            f"--namespace={LOCAL_PATH_NAMESPACE}", f"--configmap-name={LOCAL_PATH_CONFIGMAP}",
            f"--service-account-name={LOCAL_PATH_SERVICE_ACCOUNT}", f"--helper-image={HELPER_IMAGE}",
            f"--config={etc / 'config.json'}", f"--helper-pod-file={etc / 'helperPod.yaml'}"]  # fmt: skip


N = NODE_ADDRESS
CONTROL_PLANE = (
    Component("etcd", etcd, f"http://{N}:2381/health"),
    Component("kube-apiserver", apiserver, f"https://{N}:{APISERVER_PORT}/readyz"),
    Component("kube-controller-manager", controller_manager, f"https://{N}:10257/healthz"),
    Component("kube-scheduler", scheduler, f"https://{N}:10259/healthz"),
    Component("containerd", containerd, ""),
)
# Started once the bootstrap manifests are applied and the cluster's images imported.
NODE = (
    Component("kubelet", kubelet, f"http://{N}:10248/healthz"),
    Component("kube-proxy", kube_proxy, f"http://{N}:10256/healthz"),
    Component("coredns", coredns, f"http://{N}:8181/ready"),
    Component("local-path-provisioner", local_path_provisioner, ""),
)
COMPONENTS = CONTROL_PLANE + NODE
