"""The supervisor's decisions: restart only the dead, with backoff; see a zombie as dead."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iotpipe.config import Config
from stack.process import Liveness, Service, process_state, running
from stack.supervisor import RestartPolicy, Supervisor


@dataclass
class FakeComponent:
    name: str
    state: Liveness = Liveness.RUNNING

    def liveness(self) -> Liveness:
        return self.state


@dataclass
class FakeStack:
    services: list[FakeComponent]
    config: Config = field(default_factory=Config)
    restarted: list[str] = field(default_factory=list)
    fails: bool = False

    def restart(self, name: str) -> bool:
        self.restarted.append(name)
        if self.fails:
            raise RuntimeError(f"{name} exited with code 1 while starting")
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervised(*states: Liveness) -> tuple[Supervisor, FakeStack, Clock]:
    stack = FakeStack([FakeComponent(f"c{i}", state) for i, state in enumerate(states)])
    clock = Clock()
    return Supervisor(stack, clock=clock), stack, clock


def test_only_a_dead_component_is_restarted_not_a_running_or_a_stopped_one() -> None:
    supervisor, stack, clock = supervised(Liveness.RUNNING, Liveness.STOPPED, Liveness.DEAD)
    supervisor.check()
    clock.now += 1.0
    assert supervisor.check() == ["c2"]
    assert stack.restarted == ["c2"]


def test_a_crash_is_restarted_after_one_second_then_each_crash_in_a_row_waits_twice_as_long_up_to_30_s() -> None:
    supervisor, _, clock = supervised(Liveness.DEAD)
    waits = []
    for _ in range(7):
        seen_dead = clock.now
        while not supervisor.check():
            clock.now += 0.5
        waits.append(clock.now - seen_dead)
    assert waits == [1, 2, 4, 8, 16, 30, 30]


def test_the_backoff_is_forgotten_once_the_component_ran_for_a_minute() -> None:
    policy = RestartPolicy()
    for _ in range(3):
        policy.restarted()
    assert policy.delay_s == 8
    policy.should_restart(Liveness.RUNNING, now=0)
    policy.should_restart(Liveness.RUNNING, now=59)
    assert policy.delay_s == 8
    policy.should_restart(Liveness.RUNNING, now=60)
    assert policy.delay_s == 1


def test_a_component_that_dies_again_soon_keeps_its_backoff() -> None:
    policy = RestartPolicy()
    policy.restarted()
    policy.should_restart(Liveness.RUNNING, now=0)
    assert not policy.should_restart(Liveness.DEAD, now=10)
    assert not policy.should_restart(Liveness.DEAD, now=11)
    assert policy.should_restart(Liveness.DEAD, now=12)


def test_a_failed_restart_is_retried_with_a_longer_wait_and_the_supervisor_goes_on() -> None:
    supervisor, stack, clock = supervised(Liveness.DEAD, Liveness.DEAD)
    stack.fails = True
    attempts = []
    for _ in range(8):
        supervisor.check()
        attempts.append(list(stack.restarted))
        stack.restarted.clear()
        clock.now += 1
    assert attempts == [[], ["c0", "c1"], [], [], ["c0", "c1"], [], [], []]


def test_the_state_letter_is_read_after_the_last_parenthesis_of_the_name() -> None:
    assert process_state("42 (java) S 1 42 42 0 -1") == "S"
    assert process_state("42 (a) Z (b)) Z 1 42") == "Z"


@pytest.fixture
def unreaped_child():
    """A child killed by SIGKILL and not reaped: a zombie, as pytest's children are after a fault test."""
    child = subprocess.Popen(["sleep", "60"])
    child.send_signal(signal.SIGKILL)
    stat = Path(f"/proc/{child.pid}/stat")
    while process_state(stat.read_text()) != "Z":
        time.sleep(0.01)
    yield child.pid
    child.wait()


def test_a_zombie_counts_as_dead_although_kill_0_finds_it(unreaped_child: int) -> None:
    assert not running(unreaped_child)


def test_a_pid_file_naming_a_zombie_means_the_component_crashed(unreaped_child: int, tmp_path: Path) -> None:
    service = Service(name="kafka", command=["true"], healthy=lambda: True, state_dir=tmp_path)
    assert service.liveness() is Liveness.STOPPED
    service.pid_file.parent.mkdir()
    service.pid_file.write_text(str(unreaped_child))
    assert service.liveness() is Liveness.DEAD
    service.pid_file.write_text(str(Path("/proc/self").resolve().name))
    assert service.liveness() is Liveness.RUNNING


def test_the_stack_restarts_a_crashed_component_once_and_counts_it_but_not_one_stopped_on_purpose(
    unreaped_child: int, tmp_path: Path
) -> None:
    from stack import Stack

    stack = Stack(Config(state_dir=tmp_path))
    started = []
    stack.kafka.start = lambda: started.append("kafka")
    kafka = stack.kafka.process
    kafka.pid_file.parent.mkdir()
    kafka.pid_file.write_text(str(unreaped_child))
    assert stack.restart("kafka")
    assert (started, kafka.restarts()) == (["kafka"], 1)
    kafka.stop()  # on purpose: the pid file goes, and the count with it
    assert not stack.restart("kafka")
    assert (started, kafka.restarts()) == (["kafka"], 0)
