"""Where the local cluster keeps things and which versions it builds: one frozen object, read once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Versions: each is written here and nowhere else.
KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.4"
COREDNS_VERSION = "v1.15.0"
LOCAL_PATH_PROVISIONER_VERSION = "v0.0.30"
DEBIAN_SUITE = "bookworm"
# Add-ons the manifests of k8s/ need (cluster/addons.py). KEDA's is also KEDA_VERSION of deploy.mk, the release
# whose CRDs tests/deploy validates against (tests/deploy/test_local_prod_overlay.py checks that they agree).
METRICS_SERVER_VERSION = "v0.8.0"
KEDA_VERSION = "v2.20.2"

GO_CACHES = {"GOMODCACHE": "mod", "GOCACHE": "build", "GOPATH": "path"}

# Binaries built from kubernetes' own module, in one `go build`.
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)

# Debian packages the node runs on (installed with apt-get when a command is missing).
DEBIAN_PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "conntrack": "conntrack",
    "socat": "socat",
    "iptables": "iptables",
    "mmdebstrap": "mmdebstrap",
    "podman": "podman",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}
CNI_BIN_DIR = Path("/usr/lib/cni")

# Images the cluster itself needs; fixed tags, never `latest` (kubelet would try to pull it).
PAUSE_IMAGE = "localhost/iotpipe-cluster/pause:3.10"
HELPER_IMAGE = f"localhost/iotpipe-cluster/debian:{DEBIAN_SUITE}"

# Node network: a veth pair between the host and the node's network namespace.
HOST_VETH = "iotk8s-host"
NODE_VETH = "iotk8s-node"
HOST_ADDRESS = "10.203.0.1"
NODE_ADDRESS = "10.203.0.2"
VETH_PREFIX = 30
POD_CIDR = "10.204.0.0/16"
SERVICE_CIDR = "10.205.0.0/16"
KUBERNETES_SERVICE_IP = "10.205.0.1"
DNS_SERVICE_IP = "10.205.0.10"
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME = "iotpipe-node"
APISERVER_PORT = 6443

# Host sysctls that kubelet or kube-proxy may rewrite: recorded before start, restored on teardown.
RECORDED_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)


@dataclass(frozen=True)
class ClusterConfig:
    """Every path under one root (git-ignored): builds in cache, the running cluster in state."""

    root: Path

    @classmethod
    def from_env(cls, project: Path | None = None) -> ClusterConfig:
        project = project or Path(__file__).resolve().parent.parent
        return cls(root=Path(os.environ.get("IOTPIPE_CLUSTER_DIR", project / ".cache" / "cluster")).resolve())

    # Build side: kept between runs.
    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def src_dir(self) -> Path:
        return self.root / "src"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def go_env(self) -> dict[str, str]:
        """Go's own module and build caches are kept (`go env GOMODCACHE GOCACHE`): shared with every checkout
        on the machine, so that a fresh clone's build compiles nothing that another one compiled already."""
        env = {"GOFLAGS": "-mod=mod -buildvcs=false", "CGO_ENABLED": "0"}
        if not os.environ.get("HOME"):  # where Go keeps them by default: without it, keep them here
            env |= {name: str(self.root / "go" / part) for name, part in GO_CACHES.items()}
        return env

    # Run side: made by `up`, removed by `down`.
    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def data_dir(self) -> Path:
        """etcd, containerd's root and the local volumes: a real filesystem (overlay on overlay fails)."""
        return self.state_dir / "data"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def sysctls_file(self) -> Path:
        return self.state_dir / "sysctls.json"

    @property
    def holder_pid_file(self) -> Path:
        return self.pids_dir / "holder.pid"

    @property
    def containerd_socket(self) -> Path:
        """Inside the node's mount namespace (/run is its own tmpfs)."""
        return Path("/run/containerd/containerd.sock")

    def binary(self, name: str) -> Path:
        return self.bin_dir / name
