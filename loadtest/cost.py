"""A cost budget per image: CPU-microseconds per image of each component at a fixed offered load.

    python -m loadtest.cost --producers 5 --rate 20 --seconds 30 --first-images 3

Reads the CPU time of every process of each component of the running stack (the pids in
``<state dir>/pids``, each with the processes of its session: TorchServe's frontend and workers
are children of its launcher) from /proc before and after a fixed-rate ``iotpipe loadtest``, and
divides by the images sent. The load generator is that command and its children. Each
component's idle CPU (measured for ``--idle-seconds`` before the load, per second) is reported
too, and the cost above idle: what one more image costs, the part that limits throughput.

``--first-images N`` first restarts the bridge and the consumer N times through the stack (as
`iotpipe up` starts them: back when they report ready) and times one image through the pipeline
right after each restart, then one more: the cold start that a first image meets, and a warm one.

Two versions of the bridge and consumer are compared on one running stack: the restarts start
them from the checkout this runs in (``python -m app`` in the working folder), so running it in
turn from two checkouts, with ``--first-images`` of at least 1 and IOTPIPE_STATE_DIR naming the
stack's absolute state folder, measures each version under the same broker, database and model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from kafka import TopicPartition

from iotpipe import kafka_clients
from iotpipe.config import Config
from iotpipe.wire import ImageEvent, decode_headers
from stack import Stack
from stack.pipeline import APPLICATION

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MODEL_COMPONENT = "torchserve workers"  # decode, forward pass, answer: the model's own cost
FIRST_IMAGE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Budget:
    """CPU seconds of each component during a run of ``images`` images at ``offered_per_s``."""

    cpu_s: dict[str, float]
    idle_cpu_per_s: dict[str, float]  # CPU seconds per second with no load
    images: int
    offered_per_s: float
    wall_s: float
    lost_any: bool

    def us_per_image(self, component: str) -> float:
        return self.cpu_s[component] / self.images * 1e6

    def above_idle_us_per_image(self, component: str) -> float:
        idle = self.idle_cpu_per_s.get(component, 0.0) * self.wall_s
        return (self.cpu_s[component] - idle) / self.images * 1e6

    def total(self, per_image) -> float:
        return sum(per_image(component) for component in self.cpu_s)

    def outside_model(self, per_image) -> float:
        return self.total(per_image) - per_image(MODEL_COMPONENT)


def process_cpu(stat: str) -> tuple[int, float]:
    """(session id, CPU seconds of the process and its reaped children) of one /proc/<pid>/stat line.

    The command name (field 2) may hold spaces and ")", so fields are counted after its last ")".
    """
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the name: state, ppid, pgrp, session, ..., utime (14th of the line), stime, cutime, cstime.
    session = int(fields[3])
    ticks = sum(int(value) for value in fields[11:15])
    return session, ticks / TICKS_PER_S


def sessions_cpu() -> dict[int, list[tuple[str, float]]]:
    """Every readable process of this machine, as (command name, CPU seconds) by session id."""
    by_session: dict[int, list[tuple[str, float]]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        session, seconds = process_cpu(stat)
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        by_session.setdefault(session, []).append((name, seconds))
    return by_session


def component_of(service: str, command_name: str) -> str:
    """TorchServe's Java frontend and its Python model workers are told apart: the workers are the model."""
    if service == "torchserve":
        return "torchserve frontend" if command_name == "java" else MODEL_COMPONENT
    return service


def stack_pids(stack: Stack) -> dict[str, int]:
    pids = {service.name: service.pid() for service in stack.services}
    down = sorted(name for name, pid in pids.items() if pid is None)
    if down:
        raise SystemExit(f"not running: {', '.join(down)}; start the stack first (`iotpipe up`, `iotpipe status`)")
    return {name: pid for name, pid in pids.items() if pid is not None}


def cpu_by_component(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each component: every process in the session its pid file names."""
    by_session = sessions_cpu()
    totals: dict[str, float] = {}
    for service, pid in pids.items():
        for name, seconds in by_session.get(pid, []):
            component = component_of(service, name)
            totals[component] = totals.get(component, 0.0) + seconds
    return totals


def load_generator_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def idle_cpu_per_s(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = cpu_by_component(pids)
    time.sleep(seconds)
    return {name: (spent - before.get(name, 0.0)) / seconds for name, spent in cpu_by_component(pids).items()}


def measure(stack: Stack, producers: int, rate: float, seconds: float, idle_seconds: float) -> Budget:
    """The stack's CPU per component while ``producers`` cameras send ``rate`` images/s each for ``seconds``."""
    count = round(rate * seconds)
    pids = stack_pids(stack)
    idle = idle_cpu_per_s(pids, idle_seconds)
    before, generator_before = cpu_by_component(pids), load_generator_cpu()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iotpipe-cost-") as out:
        command = [*APPLICATION, "loadtest", "--producers", str(producers)]
        command += ["--rate", f"{rate:g}", "--count", str(count), "--out", out]
        finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if finished.returncode not in (0, 2):  # 2: some images lost, which the budget reports
        raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    after = cpu_by_component(pids)
    if stack_pids(stack) != pids:
        raise SystemExit("a component restarted during the run (`iotpipe status`); its CPU time is not comparable")
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    spent["load generator"] = load_generator_cpu() - generator_before
    return Budget(spent, idle, producers * count, producers * rate, wall, lost_any=finished.returncode == 2)


def budget_table(budget: Budget) -> str:
    lost = " (SOME LOST: the figures are not comparable)" if budget.lost_any else ""
    lines = [
        f"{budget.images} images offered at {budget.offered_per_s:g} images/s, {budget.wall_s:.1f} s "
        f"on {os.cpu_count()} cores{lost}",
        f"{'component':<22} {'CPU-s':>7} {'idle CPU-s/s':>12} {'CPU-us/image':>13} {'above idle':>11}",
    ]
    for name in sorted(budget.cpu_s, key=lambda name: -budget.cpu_s[name]):
        lines.append(
            f"{name:<22} {budget.cpu_s[name]:>7.2f} {budget.idle_cpu_per_s.get(name, 0.0):>12.3f} "
            f"{budget.us_per_image(name):>13.0f} {budget.above_idle_us_per_image(name):>11.0f}"
        )
    for label, figure in (("total", budget.total), ("outside the model", budget.outside_model)):
        lines.append(
            f"{label:<22} {'':>7} {'':>12} {figure(budget.us_per_image):>13.0f} "
            f"{figure(budget.above_idle_us_per_image):>11.0f}"
        )
    return "\n".join(lines)


# -- the first image after a restart -------------------------------------------------------


def first_image_latencies(config: Config, stack: Stack, restarts: int) -> tuple[list[float], float]:
    """Seconds for one image right after each of ``restarts`` restarts of the bridge and consumer, then a warm one."""
    image = min(config.data_dir.rglob("*.jpg")).read_bytes()
    services = {service.name: service for service in stack.services}
    cold = []
    for _ in range(restarts):
        for name in ("bridge", "consumer"):
            services[name].stop()
        for name in ("bridge", "consumer"):
            stack.start(name)  # returns once the service wrote its ready file
        cold.append(round_trip(config, image))
    return cold, round_trip(config, image)


def round_trip(config: Config, jpeg: bytes) -> float:
    """Seconds from sending one image to its prediction on iot-predictions (which cameras wait for)."""
    source = f"cost-{uuid.uuid4().hex[:12]}"
    listener = kafka_clients.consumer(config, group_id=None)
    producer = kafka_clients.producer(config)
    try:
        partitions = listener.partitions_for_topic(config.predictions_topic) or set()
        assigned = TopicPartition(
            config.predictions_topic, kafka_clients.partition_of(source.encode(), list(partitions))
        )
        listener.assign([assigned])
        listener.seek_to_end()
        listener.position(assigned)  # "end" resolved before the image leaves
        producer.partitions_for(config.images_topic)  # this client's own first-send cost is not the pipeline's
        event = ImageEvent(source=source, data=jpeg, content_type="image/jpeg")
        started = time.perf_counter()
        key, value, headers = event.to_record()
        producer.send(config.images_topic, key=key, value=value, headers=headers)
        producer.flush()
        while time.perf_counter() - started < FIRST_IMAGE_TIMEOUT_S:
            if event.id in answered_ids(listener.poll(timeout_ms=100).values()):
                return time.perf_counter() - started
        raise SystemExit(f"no prediction for image {event.id} in {FIRST_IMAGE_TIMEOUT_S:.0f} s; see `iotpipe status`")
    finally:
        producer.close()
        listener.close()


def answered_ids(batches: Iterable[list]) -> set[str]:
    return {decode_headers(record.headers).get("ce_id", "") for records in batches for record in records}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--producers", type=int, default=5, help="cameras sending at once (default 5)")
    parser.add_argument("--rate", type=float, default=20.0, help="images/s per camera (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they send (default 30)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU measured first (default 10)")
    parser.add_argument(
        "--first-images", type=int, default=0, metavar="N", help="also time one image after each of N restarts"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    config = Config.load()
    stack = Stack(config)
    result: dict = {}
    if args.first_images:
        cold, warm = first_image_latencies(config, stack, args.first_images)
        print(f"first image after a restart of bridge and consumer: {', '.join(f'{s * 1000:.0f}' for s in cold)} ms")
        print(f"an image once warm: {warm * 1000:.0f} ms")
        result["first_image_s"], result["warm_image_s"] = cold, warm
    budget = measure(stack, args.producers, args.rate, args.seconds, args.idle_seconds)
    print(budget_table(budget))
    if args.json:
        per_image = {name: budget.us_per_image(name) for name in budget.cpu_s}
        above_idle = {name: budget.above_idle_us_per_image(name) for name in budget.cpu_s}
        result["budget"] = asdict(budget) | {"us_per_image": per_image, "above_idle_us_per_image": above_idle}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
