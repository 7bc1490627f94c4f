"""Host sysctls recorded and restored, cgroup mounts found, status parsed (cluster/)."""

import signal
import time
from pathlib import Path

import pytest

from cluster import sysctls
from cluster.cluster import Row, anonymous_bytes, format_rows, node_ready, vm_rss_bytes
from cluster.e2e import E2EError, stop_at_deadline
from cluster.node import cgroup_hierarchies


def write(root: Path, name: str, value: str) -> None:
    path = sysctls.sysctl_path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def test_sysctls_changed_by_the_cluster_are_restored_and_reported(tmp_path):
    write(tmp_path, "vm.overcommit_memory", "0")
    write(tmp_path, "kernel.panic", "1")
    record = tmp_path / "record.json"
    recorded = sysctls.record_once(record, ["vm.overcommit_memory", "kernel.panic", "net.absent"], tmp_path)
    assert recorded == {"vm.overcommit_memory": "0", "kernel.panic": "1"}
    write(tmp_path, "vm.overcommit_memory", "1")  # what kubelet does
    assert sysctls.changed(recorded, tmp_path) == {"vm.overcommit_memory": ("0", "1")}
    assert sysctls.restore(recorded, tmp_path) == {"vm.overcommit_memory": ("1", "0")}
    assert sysctls.changed(recorded, tmp_path) == {}


def test_a_second_record_keeps_the_hosts_values_not_the_clusters(tmp_path):
    write(tmp_path, "kernel.panic", "1")
    record = tmp_path / "record.json"
    sysctls.record_once(record, ["kernel.panic"], tmp_path)
    write(tmp_path, "kernel.panic", "10")
    assert sysctls.record_once(record, ["kernel.panic"], tmp_path) == {"kernel.panic": "1"}


def test_cgroup_hierarchies_are_read_from_mountinfo():
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "32 30 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "33 25 0:29 / /proc rw - proc proc rw\n"
    )
    assert cgroup_hierarchies(mountinfo) == [Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/unified")]


def test_a_node_is_ready_only_when_its_ready_condition_is_true():
    ready = {
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]}
    }
    assert node_ready(ready)
    assert not node_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not node_ready({})


def test_memory_is_read_from_the_cgroup_tree_and_each_process():
    assert anonymous_bytes("cache 4096\nrss 10\ntotal_cache 8192\ntotal_rss 1048576\n") == 1048576
    assert anonymous_bytes("") == 0
    assert vm_rss_bytes("Name:\tetcd\nVmHWM:\t  9000 kB\nVmRSS:\t   2048 kB\n") == 2 * 2**20


def test_status_rows_read_like_iotpipe_status():
    text = format_rows([Row("etcd", True, True, "http://10.203.0.2:2381/health 200"), Row("kubelet", False, False, "")])
    lines = text.splitlines()
    assert lines[0].split() == ["component", "process", "health", "detail"]
    assert lines[1].split()[:3] == ["etcd", "running", "healthy"]
    assert lines[2].split() == ["kubelet", "stopped", "down"]


def test_a_cluster_test_past_its_deadline_fails_through_its_own_error_path():
    stop_at_deadline(1)
    with pytest.raises(E2EError, match="not done within --deadline 1 s"):
        time.sleep(5)
    signal.alarm(0)
