"""Where the CPU goes: CPU seconds per pipeline component while a command runs (Linux /proc).

    python -m loadtest.cpu_profile -- iotpipe produce --count 3000 --rate 0 --producer-id profile

Components are found by their command lines (the embedded stack's processes); the command's own
CPU (the cameras, when it is `iotpipe produce` or `iotpipe loadtest`) is counted as "load generator".
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import time
from pathlib import Path

COMPONENTS = {
    "kafka.Kafka": "Kafka broker",
    "org.pytorch.serve.ModelServer": "TorchServe frontend (Java)",
    "model_service_worker.py": "TorchServe workers (Python)",
    "-m app bridge": "bridge",
    "-m app consumer": "consumer",
    "pouchdb-server": "CouchDB API (PouchDB Server)",
}
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_component(state_dir: Path) -> dict[str, float]:
    """CPU seconds so far of every running process of the stack whose state folder is ``state_dir``."""
    owned = re.compile(rf"{re.escape(str(state_dir))}/(logs|data|torchserve|pids)(/|\s|$)")
    totals: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        component = next((name for marker, name in COMPONENTS.items() if marker in command), None)
        if component and owned.search(command):
            totals[component] = totals.get(component, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path(".run"), help="the stack's state folder")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND... to run while measuring")
    args = parser.parse_args(argv)
    command = [part for part in args.command if part != "--"]
    state_dir = args.state_dir.resolve()
    before = cpu_seconds_by_component(state_dir)
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = cpu_seconds_by_component(state_dir)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    spent["load generator"] = usage.ru_utime + usage.ru_stime
    print(f"{wall:.1f} s wall, {os.cpu_count()} cores: {wall * os.cpu_count():.1f} CPU-s available")
    print(f"{'component':<30} {'CPU-s':>6} {'share':>6}")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"{name:<30} {seconds:>6.1f} {seconds / sum(spent.values()):>6.0%}")
    print(f"{'total':<30} {sum(spent.values()):>6.1f}")


if __name__ == "__main__":
    main()
