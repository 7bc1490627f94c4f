"""The cost budget's arithmetic and its reading of /proc/<pid>/stat."""

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.cost import MODEL_COMPONENT, TICKS_PER_S, Budget, component_of, process_cpu

# A command name as the kernel writes it: up to 15 characters, any of them, ")" and spaces included.
command_names = st.text(st.characters(exclude_characters="\0\n"), max_size=15)
counters = st.integers(0, 2**40)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(command_names, st.integers(1, 2**22), counters, counters, counters, counters)
def test_a_stat_line_gives_the_session_and_the_cpu_of_the_process_and_its_reaped_children(
    name, session, utime, stime, cutime, cstime
) -> None:
    line = f"4242 ({name}) S 1 4242 {session} 0 -1 4194560 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 3 0 99"
    assert process_cpu(line) == (session, (utime + stime + cutime + cstime) / TICKS_PER_S)


def test_a_stat_line_of_this_process_is_read() -> None:
    session, seconds = process_cpu(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert session == os.getsid(0) and seconds > 0


def test_torchserve_workers_are_the_model_and_its_java_frontend_is_not() -> None:
    assert component_of("torchserve", "java") == "torchserve frontend"
    assert component_of("torchserve", "python") == MODEL_COMPONENT
    assert component_of("bridge", "python") == "bridge"


def test_the_cost_above_idle_leaves_out_what_the_component_burns_without_load() -> None:
    budget = Budget(
        cpu_s={MODEL_COMPONENT: 2.0, "kafka": 3.0},
        idle_cpu_per_s={"kafka": 0.05},
        images=1000,
        offered_per_s=100,
        wall_s=20.0,
        lost_any=False,
    )
    assert budget.us_per_image("kafka") == 3000
    assert budget.above_idle_us_per_image("kafka") == 2000  # 1 CPU-s of the 3 is idle over 20 s
    assert budget.total(budget.us_per_image) == 5000
    assert budget.outside_model(budget.above_idle_us_per_image) == 2000
