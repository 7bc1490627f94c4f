"""`up`, `down`, `status` and `import-image` of the local cluster: the object the CLI calls."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import pki, render, sysctls
from cluster.build import Builder
from cluster.components import COMPONENTS, CONTROL_PLANE, NODE, Component, http_ok
from cluster.config import HELPER_IMAGE, HOST_VETH, NODE_NAME, PAUSE_IMAGE, RECORDED_SYSCTLS, ClusterConfig
from cluster.node import CGROUP_MOUNT, Node, NodeError, cgroup_leftovers, read_pid, remove_cgroups
from cluster.render import CGROUP_ROOT


class ClusterError(RuntimeError):
    """The cluster did not come up or go down cleanly; the message says where to look."""


@dataclass(frozen=True)
class Row:
    component: str
    running: bool
    healthy: bool
    detail: str


def node_ready(node: dict[str, Any]) -> bool:
    """Whether a Node object (kubectl -o json) reports Ready=True."""
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def anonymous_bytes(memory_stat: str) -> int:
    """Anonymous resident memory of a cgroup v1 tree (page cache left out), from its memory.stat."""
    for line in memory_stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "total_rss":
            return int(value)
    return 0


def vm_rss_bytes(proc_status: str) -> int:
    """A process's resident set (anonymous and file-backed pages) from /proc/PID/status."""
    for line in proc_status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def format_rows(rows: Sequence[Row]) -> str:
    lines = [f"{'component':<24} {'process':<9} {'health':<9} detail"]
    for row in rows:
        process = "running" if row.running else "stopped"
        health = "healthy" if row.healthy else "down"
        lines.append(f"{row.component:<24} {process:<9} {health:<9} {row.detail}")
    return "\n".join(lines)


class Cluster:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.node = Node(config)

    # Commands the apiserver answers -----------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        command = [str(self.config.binary("kubectl")), f"--kubeconfig={self.config.kubeconfig}", *args]
        done = subprocess.run(command, capture_output=True, text=True, input=input_text, check=False)
        if check and done.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def ctr_command(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.config.containerd_socket), "--namespace", "k8s.io", *args]

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.node.enter(self.ctr_command(*args), check=check, capture_output=True, text=True)

    # up ---------------------------------------------------------------------------------------------
    def up(self) -> dict[str, float]:
        """Build what is missing, then start what is not running; returns each phase's seconds."""
        timings = {f"build {name}": seconds for name, seconds in Builder(self.config).build().items()}
        started = time.monotonic()
        sysctls.record_once(self.config.sysctls_file, RECORDED_SYSCTLS)
        self.write_files()
        self.node.start()
        for component in CONTROL_PLANE:
            self.start(component)
        for image in (PAUSE_IMAGE, HELPER_IMAGE):
            self.import_image(Builder(self.config).image_tar(image), quiet=True)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(self.config.etc_dir / "bootstrap.json"))
        for component in NODE:
            self.start(component)
        self.wait_until_ready()
        timings["up"] = round(time.monotonic() - started, 1)
        return timings

    def write_files(self) -> None:
        for directory in (self.config.etc_dir, self.config.logs_dir, self.config.pids_dir, self.config.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        pki.ensure(self.config.pki_dir)
        for path, text in render.files(self.config).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        shutil.copyfile(self.config.etc_dir / "admin.kubeconfig", self.config.kubeconfig)
        self.config.kubeconfig.chmod(0o600)

    def start(self, component: Component) -> None:
        self.node.spawn(component.name, component.command(self.config))
        deadline = time.monotonic() + component.start_timeout_s
        while True:
            healthy, detail = self.health(component)
            if healthy:
                return
            if time.monotonic() > deadline or self.pid(component) is None:
                log = self.config.logs_dir / f"{component.name}.log"
                raise ClusterError(f"{component.name} is not healthy ({detail}); see {log}")
            time.sleep(0.5)

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        """The node Ready and the `default` service account made: pods can be created."""
        deadline = time.monotonic() + timeout_s
        waiting = "the node"
        while time.monotonic() < deadline:
            node = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if node.returncode != 0 or not node_ready(json.loads(node.stdout)):
                waiting = f"node {NODE_NAME} Ready"
            elif self.kubectl("-n", "default", "get", "serviceaccount", "default", check=False).returncode != 0:
                waiting = "service account default/default"
            else:
                return
            time.sleep(1)
        raise ClusterError(f"waited {timeout_s:.0f} s for {waiting}; see {self.config.logs_dir}/kubelet.log")

    def import_image(self, tarball: Path, quiet: bool = False) -> str:
        """Import a docker-archive or OCI tarball into the node's containerd (namespace k8s.io)."""
        if not tarball.is_file():
            raise ClusterError(f"{tarball} is not a file: give an image tarball (podman save / docker save)")
        done = self.ctr("images", "import", str(tarball.resolve()), check=False)
        if done.returncode != 0:
            raise ClusterError(f"importing {tarball} failed: {done.stderr.strip() or done.stdout.strip()}")
        if not quiet:
            print(done.stdout.strip())
        return done.stdout

    # down -------------------------------------------------------------------------------------------
    def down(self) -> dict[str, Any]:
        """Stop everything, remove the cgroups, restore host sysctls, delete the run state. Returns
        what was found left over (every list empty when teardown is clean) and the seconds it took."""
        started = time.monotonic()
        self.node.stop()
        report: dict[str, Any] = {"cgroups": [str(p) for p in remove_cgroups()]}
        restored = sysctls.restore(sysctls.load(self.config.sysctls_file))
        report["sysctls restored"] = {name: f"{was} -> {value}" for name, (was, value) in restored.items()}
        report["sysctls changed"] = sysctls.changed(sysctls.load(self.config.sysctls_file))
        report["processes"] = self.node.running_pids() + leftover_processes(self.config)
        report["mounts"] = leftover_mounts(self.config)
        report["veth"] = [HOST_VETH] if Path(f"/sys/class/net/{HOST_VETH}").exists() else []
        if not any(report[key] for key in ("cgroups", "sysctls changed", "processes", "mounts", "veth")):
            shutil.rmtree(self.config.state_dir, ignore_errors=True)
        report["seconds"] = round(time.monotonic() - started, 1)
        return report

    # status -----------------------------------------------------------------------------------------
    def pid(self, component: Component) -> int | None:
        return read_pid(self.config.pids_dir / f"{component.name}.pid")

    def health(self, component: Component) -> tuple[bool, str]:
        if self.pid(component) is None:
            return False, "not running"
        if component.name == "containerd":
            done = self.ctr("version", check=False)
            return done.returncode == 0, str(self.config.containerd_socket) + (
                "" if done.returncode == 0 else " not answering"
            )
        if not component.health_url:
            return True, f"log: {self.config.logs_dir / (component.name + '.log')}"
        return http_ok(component.health_url)

    def status(self) -> list[Row]:
        holder = self.node.holder_pid()
        rows = [
            Row("node namespaces", holder is not None, holder is not None, f"holder pid {holder}" if holder else "")
        ]
        for component in COMPONENTS:
            running = self.pid(component) is not None
            healthy, detail = self.health(component) if holder else (False, "")
            rows.append(Row(component.name, running, healthy, detail))
        return rows

    def resident_memory(self) -> str:
        """The VmRSS of every process of the cluster (pods included), and how much of it is anonymous."""
        tree = CGROUP_MOUNT / "memory" / CGROUP_ROOT.lstrip("/")
        if not tree.exists():
            return "no cluster cgroup"
        rss = 0
        for procs in tree.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(OSError):
                    rss += vm_rss_bytes(Path(f"/proc/{pid}/status").read_text())
        anonymous = anonymous_bytes((tree / "memory.stat").read_text())
        return f"{rss / 2**20:.0f} MiB resident ({anonymous / 2**20:.0f} MiB anonymous)"


def leftover_processes(config: ClusterConfig) -> list[int]:
    """Any process whose command line names the cluster's directory (its binaries, its config)."""
    marker = str(config.root).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def leftover_mounts(config: ClusterConfig) -> list[str]:
    """Host mounts under the cluster's directory (there should never be any: they live in the node's
    mount namespace)."""
    root = str(config.root)
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(root)
    ]


__all__ = ["Cluster", "ClusterError", "NodeError", "Row", "cgroup_leftovers", "format_rows"]
