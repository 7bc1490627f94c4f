"""The node: a holder process that owns the cluster's PID, mount and network namespaces, a veth for the
node address, one cgroup tree, and the components started inside with nsenter.

Killing the holder (PID 1 of the namespace) kills every process of the cluster, pods included; its
mounts and network namespace, veth and iptables rules with it. What the kernel does not clean up (the
cgroups, host sysctls) `down` removes and restores."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from cluster.config import HOST_ADDRESS, HOST_VETH, NODE_ADDRESS, NODE_VETH, VETH_PREFIX, ClusterConfig
from cluster.render import CGROUP_ROOT

CGROUP_MOUNT = Path("/sys/fs/cgroup")
NODE_CGROUP = f"{CGROUP_ROOT}/node"
NODE_SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables")


class NodeError(RuntimeError):
    """The node could not be made or entered; the message says what to do."""


def cgroup_hierarchies(mountinfo: str) -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy, from /proc/self/mountinfo's text."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype in ("cgroup", "cgroup2"):
            points.append(Path(fields[4]))
    return points


def hierarchies() -> list[Path]:
    return cgroup_hierarchies(Path("/proc/self/mountinfo").read_text())


def make_cgroups() -> None:
    """The cluster's cgroup in each hierarchy (kubelet refuses a cgroupRoot that does not exist)."""
    for hierarchy in hierarchies():
        for relative in (CGROUP_ROOT, NODE_CGROUP):
            path = hierarchy / relative.lstrip("/")
            path.mkdir(exist_ok=True)
            if (path / "cpuset.cpus").exists():  # cgroup v1 cpuset: an empty set admits no task
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / name).read_text().strip():
                        (path / name).write_text((path.parent / name).read_text())


def join_node_cgroup() -> None:
    """Runs in a child before exec: the component and all it forks live in the node's cgroup."""
    for hierarchy in hierarchies():
        procs = hierarchy / NODE_CGROUP.lstrip("/") / "cgroup.procs"
        if procs.exists():
            procs.write_text(str(os.getpid()))


def cgroup_leftovers() -> list[Path]:
    return [
        hierarchy / CGROUP_ROOT.lstrip("/")
        for hierarchy in hierarchies()
        if (hierarchy / CGROUP_ROOT.lstrip("/")).exists()
    ]


def remove_cgroups(timeout_s: float = 20.0) -> list[Path]:
    """rmdir the cluster's cgroup trees bottom-up (a cgroup empties a moment after its last task dies);
    returns what is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        for tree in cgroup_leftovers():
            for directory in sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                tree.rmdir()
        left = cgroup_leftovers()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def holder_script(config: ClusterConfig) -> str:
    """Runs as PID 1 of the new namespaces: private /run, /var as an overlay (kubelet and containerd
    hard-code paths there), shared propagation for kubelet's volume mounts, then the reaper."""
    upper, work = config.data_dir / "var" / "upper", config.data_dir / "var" / "work"
    return " && ".join(
        [
            "mount --make-rshared /",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            f"mkdir -p {upper} {work}",
            f"mount -t overlay overlay -o lowerdir=/var,upperdir={upper},workdir={work} /var",
            f"exec {config.binary('pause')}",
        ]
    )


class Node:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config

    def holder_pid(self) -> int | None:
        return read_pid(self.config.holder_pid_file)

    def start(self) -> int:
        """Start the holder and its veth (idempotent: an existing holder is kept)."""
        pid = self.holder_pid()
        if pid is not None:
            return pid
        make_cgroups()
        self.config.pids_dir.mkdir(parents=True, exist_ok=True)
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        command = ["unshare", "--pid", "--mount", "--net", "--fork", "--mount-proc", "--propagation", "private",
                   "sh", "-c", holder_script(self.config)]  # fmt: skip
        with (self.config.logs_dir / "holder.log").open("a") as log:
            unshare = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=join_node_cgroup,
            )  # fmt: skip
        pid = first_child(unshare, self.config.logs_dir / "holder.log")
        # The mounts are in place once the holder has become pause.
        wait_until_exec(pid, self.config.binary("pause"), self.config.logs_dir / "holder.log")
        self.config.holder_pid_file.write_text(str(pid))
        self.add_veth(pid)
        return pid

    def add_veth(self, pid: int) -> None:
        ip = ["ip", "link"]
        run([*ip, "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH, "netns", str(pid)])
        run(["ip", "addr", "add", f"{HOST_ADDRESS}/{VETH_PREFIX}", "dev", HOST_VETH])
        run([*ip, "set", HOST_VETH, "up"])
        inside = self.enter_command(["ip"], pid)
        run([*inside, "link", "set", "lo", "up"])
        run([*inside, "addr", "add", f"{NODE_ADDRESS}/{VETH_PREFIX}", "dev", NODE_VETH])
        run([*inside, "link", "set", NODE_VETH, "up"])
        # Components look for a default route to pick their address; the host does not forward it on.
        run([*inside, "route", "add", "default", "via", HOST_ADDRESS])
        # In the node's network namespace only: a pod's reply to a Service client on the same bridge
        # must pass iptables to be un-NATed.
        for name in NODE_SYSCTLS:
            run(self.enter_command(["sh", "-c", f"echo 1 > /proc/sys/{name.replace('.', '/')}"], pid))

    def enter_command(self, command: Sequence[str], pid: int | None = None) -> list[str]:
        pid = pid or self.holder_pid()
        if pid is None:
            raise NodeError("the cluster is not running: start it with `make cluster`")
        return ["nsenter", f"--target={pid}", "--pid", "--mount", "--net", "--", *command]

    def enter(self, command: Sequence[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.enter_command(command), check=check, **kwargs)

    def spawn(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Start a component inside the node, detached; its pid (as the host sees it) goes to
        pids/<name>.pid and its output to logs/<name>.log."""
        pid_file = self.config.pids_dir / f"{name}.pid"
        pid = read_pid(pid_file)
        if pid is not None:
            return pid
        with (self.config.logs_dir / f"{name}.log").open("a") as log:
            process = subprocess.Popen(
                self.enter_command(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, start_new_session=True, preexec_fn=join_node_cgroup,
            )  # fmt: skip
        pid = first_child(process, self.config.logs_dir / f"{name}.log")
        pid_file.write_text(str(pid))
        return pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """Kill the holder: the kernel kills every process of its PID namespace and frees its network
        namespace (the veth goes with it). Then wait for the nsenter parents to go."""
        pid = self.holder_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running_pids():
            time.sleep(0.2)
        for leftover in self.running_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        # The kernel frees the veth with the network namespace, maybe between the check and the delete; `down`
        # reports one that is still there.
        with contextlib.suppress(NodeError):
            if Path(f"/sys/class/net/{HOST_VETH}").exists():
                run(["ip", "link", "delete", HOST_VETH])

    def running_pids(self) -> list[int]:
        if not self.config.pids_dir.exists():
            return []
        return [pid for f in self.config.pids_dir.glob("*.pid") if (pid := read_pid(f)) is not None]


def first_child(parent: subprocess.Popen, log: Path, timeout_s: float = 10.0) -> int:
    """The process that unshare or nsenter forks into the new PID namespace: the one to watch and kill
    (killing nsenter would leave it running)."""
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and parent.poll() is None:
        with contextlib.suppress(OSError):
            if pids := children.read_text().split():
                return int(pids[0])
        time.sleep(0.05)
    raise NodeError(f"{parent.args[-1] if isinstance(parent.args, list) else parent.args} did not start; see {log}")


def wait_until_exec(pid: int, binary: Path, log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/exe").resolve() == binary.resolve():
                return
        time.sleep(0.05)
    raise NodeError(f"the node's namespaces did not come up; see {log}")


def run(command: Sequence[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NodeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
