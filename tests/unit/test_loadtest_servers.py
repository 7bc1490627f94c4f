"""`iotpipe loadtest --model-server`: each server in turn on one stack, with fake stacks; the comparison files."""

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.commands import build_parser
from iotpipe.config import Config
from loadtest.cli import BOTH, MODEL_SERVERS, model_servers, open_loop_count
from loadtest.report import comparison_table, write_comparison
from loadtest.servers import SERVERS, ServerComparison, server_config
from loadtest.summary import Phase, Summary
from model_archives import model_version
from producer import ProducerReport
from tests.unit.test_loadtest_report import PROVENANCE
from tests.unit.test_loadtest_report import SETTINGS as REPORT_SETTINGS

SETTINGS = REPORT_SETTINGS | {"open_loop_count_per_producer": 8}


def phase(rate: float, latency_s: float, duration_s: float) -> Phase:
    """Two cameras sending 4 images each at ``rate`` (0: unpaced), every image answered in ``latency_s``."""
    reports = [
        ProducerReport(f"cam-{i}", sent=4, answered=4, latencies=[latency_s] * 4, duration_s=duration_s)
        for i in range(2)
    ]
    return Phase.from_reports(2, rate, reports)


def summary(latency_s: float, open_loop_duration_s: float, config: Config | None = None) -> Summary:
    """A closed-rate phase (8 images in 0.5 s) and an open-loop one (8 images in ``open_loop_duration_s``)."""
    phases = [phase(20.0, latency_s, 0.5), phase(0.0, 0.2, open_loop_duration_s)]
    return Summary(PROVENANCE, settings(config or server_config(Config(), "torchserve")), phases=phases)


def settings(config: Config) -> dict:
    served = {"model_server": config.model_server, "inference_protocol": config.inference_protocol}
    return SETTINGS | served | {"model_version_pinned": config.model_version or None}


@dataclass
class Row:
    running: bool


class FakeComponent:
    def __init__(self, missing: list[str]) -> None:
        self._missing = missing

    def missing(self) -> list[str]:
        return self._missing


class FakeStacks:
    """Stands in for ``stack.Stack``: records each call as (call, model server) and whether the stack runs."""

    def __init__(self, running: bool, missing: dict[str, list[str]] | None = None) -> None:
        self.running = running
        self.missing = missing or {}
        self.calls: list[tuple[str, str]] = []
        self.configs: list[Config] = []

    def __call__(self, config: Config) -> "FakeStack":
        return FakeStack(self, config)


class FakeStack:
    def __init__(self, stacks: FakeStacks, config: Config) -> None:
        self.stacks = stacks
        self.config = config
        self.components = [FakeComponent(stacks.missing.get(config.model_server, []))]

    def status(self) -> list[Row]:
        return [Row(self.stacks.running), Row(False)]

    def up(self, progress=print) -> Config:
        self.stacks.calls.append(("up", self.config.model_server))
        self.stacks.configs.append(self.config)
        self.stacks.running = True
        return self.config

    def down(self, purge: bool = False) -> list[str]:
        assert not purge, "a comparison never deletes the stack's data"
        self.stacks.calls.append(("down", self.config.model_server))
        self.stacks.running = False
        return ["consumer", "bridge", self.config.model_server]


class Measurements:
    """Stands in for the load test: records where each server's results go; ``fail_on`` raises there."""

    def __init__(self, stacks: FakeStacks, fail_on: str | None = None) -> None:
        self.stacks = stacks
        self.fail_on = fail_on
        self.outs: dict[str, Path] = {}

    def __call__(self, config: Config, out: Path) -> Summary:
        assert self.stacks.running, "measured while the stack was stopped"
        self.stacks.calls.append(("measure", config.model_server))
        if config.model_server == self.fail_on:
            raise RuntimeError("none of the images was answered")
        self.outs[config.model_server] = out
        return summary(0.03 if config.model_server == "torchserve" else 0.05, 0.02, config)


def compare(tmp_path: Path, stacks: FakeStacks, measure: Measurements, servers=SERVERS):
    return ServerComparison(Config(), servers, measure, tmp_path, stack=stacks, progress=lambda line: None).run()


def test_each_server_is_started_measured_and_stopped_in_turn_and_a_running_stack_is_started_again(tmp_path):
    stacks = FakeStacks(running=True)
    summaries = compare(tmp_path, stacks, Measurements(stacks))

    stop_whichever_server_ran = [("down", "torchserve"), ("down", "mlserver")]
    each_server = [call for server in SERVERS for call in [("up", server), ("measure", server), ("down", server)]]
    assert stacks.calls == [*stop_whichever_server_ran, *each_server, ("up", "torchserve")]
    assert list(summaries) == list(SERVERS)
    assert stacks.configs[-1] == Config(), "started again as configured"


def test_a_stack_that_was_stopped_stays_stopped(tmp_path):
    stacks = FakeStacks(running=False)
    compare(tmp_path, stacks, Measurements(stacks), servers=("mlserver",))

    assert stacks.calls[-1] == ("down", "mlserver")
    assert not stacks.running


def test_each_server_writes_into_its_own_folder_and_the_comparison_beside_them(tmp_path):
    stacks = FakeStacks(running=False)
    measure = Measurements(stacks)
    compare(tmp_path, stacks, measure)

    assert measure.outs == {server: tmp_path / server for server in SERVERS}
    report = (tmp_path / "comparison.md").read_text()
    assert all(f"| {server}" in report for server in SERVERS)
    assert (
        f"torchserve over torchserve, mlserver over open-inference; model version: {model_version('resnet20')}."
        in report
    )
    assert (tmp_path / "comparison.png").read_bytes().startswith(b"\x89PNG")


def test_a_server_not_installed_is_reported_before_anything_is_stopped(tmp_path):
    stacks = FakeStacks(running=True, missing={"mlserver": ["MLServer (.venv/bin/mlserver; pip install mlserver)"]})
    with pytest.raises(RuntimeError, match=r"not installed: MLServer .*make setup.*nothing was stopped"):
        compare(tmp_path, stacks, Measurements(stacks))
    assert stacks.calls == []


def test_a_failed_measurement_stops_that_server_keeps_the_comparison_so_far_and_starts_the_stack_again(tmp_path):
    stacks = FakeStacks(running=True)
    with pytest.raises(RuntimeError, match="none of the images"):
        compare(tmp_path, stacks, Measurements(stacks, fail_on="mlserver"))

    assert stacks.calls[-3:] == [("measure", "mlserver"), ("down", "mlserver"), ("up", "torchserve")]
    report = (tmp_path / "comparison.md").read_text()
    assert "| torchserve" in report
    assert "| mlserver" not in report


def test_each_server_runs_with_its_protocol_and_the_configured_models_version_pinned():
    torchserve, mlserver = (server_config(Config(model_arch="resnet32"), server) for server in SERVERS)

    assert (torchserve.model_server, torchserve.inference_protocol) == ("torchserve", "torchserve")
    assert (mlserver.model_server, mlserver.inference_protocol) == ("mlserver", "open-inference")
    assert torchserve.model_version == mlserver.model_version == model_version("resnet32")
    assert server_config(Config(model_version="56.3"), "mlserver").model_version == "56.3"


def table_columns(table: str) -> dict[str, list[str]]:
    """A markdown table's cells by column header, top to bottom."""
    header, _, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines())
    return {name: [row[index] for row in rows] for index, name in enumerate(header)}


def test_the_comparison_has_a_row_per_server_with_its_closed_rate_percentiles_and_open_loop_throughput():
    table = comparison_table({"torchserve": summary(0.03, 0.02), "mlserver": summary(0.05, 0.04)})
    columns = table_columns(table)

    assert columns["server"] == ["torchserve", "mlserver"]
    assert columns["cameras x img/s"] == ["2 x 20", "2 x 20"]
    assert columns["p50 ms"] == columns["p95 ms"] == columns["p99 ms"] == columns["max ms"] == ["30.0", "50.0"]
    assert columns["answered img/s"] == ["16.0", "16.0"]
    assert columns["open loop img/s"] == ["400.0", "200.0"]
    assert columns["vs first"] == ["1.00", "0.50"]


def test_a_comparison_without_paced_phases_shows_every_phase_and_its_open_loop_figure(tmp_path):
    unpaced = Summary(PROVENANCE, settings(Config()), phases=[phase(0.0, 0.2, 0.02)])
    write_comparison(tmp_path, {"torchserve": unpaced, "mlserver": unpaced})

    table = next(part for part in (tmp_path / "comparison.md").read_text().split("\n\n") if part.startswith("|"))
    columns = table_columns(table)
    assert columns["cameras x img/s"] == ["2 x max", "2 x max"]
    assert columns["answered img/s"] == columns["open loop img/s"] == ["400.0", "400.0"]


@given(st.text(max_size=20))
def test_model_server_choices_parse_to_servers_or_say_what_to_give(text):
    try:
        servers = model_servers(text)
    except argparse.ArgumentTypeError as error:
        assert text not in (*MODEL_SERVERS, BOTH)
        assert all(choice in str(error) for choice in (*MODEL_SERVERS, BOTH))
    else:
        assert servers == (MODEL_SERVERS if text == BOTH else (text,))


def test_both_means_every_model_server_the_stack_can_run():
    assert model_servers(BOTH) == SERVERS


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], None),
        (["--open-loop-count", "7"], 7),
        (["--model-server", "both"], 4),
        (["--model-server", "both", "--open-loop-count", "7"], 7),
        (["--model-server", "both", "--rate", "max"], None),
    ],
)
def test_a_server_comparison_measures_open_loop_throughput_unless_every_phase_is_open_loop(flags, expected):
    args = build_parser().parse_args(["loadtest", "--out", "o", "--rate", "20", "--count", "4", *flags])
    assert open_loop_count(args) == expected
