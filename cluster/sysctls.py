"""Host sysctls that the cluster may rewrite (kubelet sets vm.overcommit_memory, kernel.panic, ...):
recorded once before the first start, compared and restored on teardown."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

PROC_SYS = Path("/proc/sys")


def sysctl_path(name: str, root: Path = PROC_SYS) -> Path:
    return root / name.replace(".", "/")


def read(names: Iterable[str], root: Path = PROC_SYS) -> dict[str, str]:
    """Current values; a sysctl this kernel does not have is left out."""
    values = {}
    for name in names:
        try:
            values[name] = sysctl_path(name, root).read_text().strip()
        except (FileNotFoundError, PermissionError):
            continue
    return values


def changed(recorded: Mapping[str, str], root: Path = PROC_SYS) -> dict[str, tuple[str, str]]:
    """name -> (recorded, now) for every recorded sysctl whose value differs now."""
    now = read(recorded, root)
    return {name: (value, now[name]) for name, value in recorded.items() if name in now and now[name] != value}


def restore(recorded: Mapping[str, str], root: Path = PROC_SYS) -> dict[str, tuple[str, str]]:
    """Write back every recorded value that changed; returns what was restored (name -> (was, restored))."""
    differences = changed(recorded, root)
    for name, (value, now) in differences.items():
        sysctl_path(name, root).write_text(value + "\n")
        differences[name] = (now, value)
    return differences


def record_once(record_file: Path, names: Iterable[str], root: Path = PROC_SYS) -> dict[str, str]:
    """Record the host's values unless a record exists: a second `up`, or an `up` after a crash, must not
    take the cluster's values for the host's."""
    if record_file.exists():
        return load(record_file)
    values = read(names, root)
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(values, indent=2) + "\n")
    return values


def load(record_file: Path) -> dict[str, str]:
    try:
        return json.loads(record_file.read_text())
    except FileNotFoundError:
        return {}
