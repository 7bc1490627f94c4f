"""Short load tests against the running stack: every image answered, every result file and figure written."""

import json

import pytest

from loadtest.latency_files import analyze
from loadtest.report import phase_table
from loadtest.run import LoadTest
from loadtest.search import BISECTIONS

pytestmark = pytest.mark.integration

PRODUCERS = [1, 3]
COUNT = 8
STATS = ("p50", "p90", "p95", "p99", "max")


def test_a_short_load_test_answers_every_image_and_writes_its_report(stack, tmp_path):
    summary = LoadTest(stack, PRODUCERS, rate=10.0, count=COUNT, out=tmp_path, processes=2).run()
    print(f"\n{phase_table(summary)}")

    written = json.loads((tmp_path / "summary.json").read_text())
    assert {"model", "model_version", "git_commit", "machine", "date", "knee", "knee_rule"} <= written.keys()
    assert [phase["producers"] for phase in written["phases"]] == PRODUCERS
    for phase in written["phases"]:
        assert phase["sent"] == phase["answered"] + phase["lost"] == phase["producers"] * COUNT
        assert phase["lost"] == 0
        assert phase["offered_rate"] == phase["producers"] * 10.0
        assert phase["throughput"] > 0
        assert [phase[name] for name in STATS] == sorted(phase[name] for name in STATS)
        assert phase["first_to_median"] > 0
        assert phase["loadgen_cpu_s"] > 0
        assert phase["processes"] == min(2, phase["producers"])

    for producers in PRODUCERS:
        files = sorted(tmp_path.glob(f"latency_p{producers}_lt-*-p{producers}-*.txt"))
        assert len(files) == producers
        assert analyze(files)[-1].stats.count == producers * COUNT
    assert "| producers |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_a_search_for_an_impossible_p95_bound_reports_every_step_and_no_load_within_it(stack, tmp_path):
    summary = LoadTest(stack, [2], rate=0, count=COUNT, out=tmp_path, slo_p95_s=1e-6).run()

    [search] = json.loads((tmp_path / "summary.json").read_text())["slo_search"]
    assert search["best_offered_rate"] is None
    assert [step["within"] for step in search["steps"]] == [False] * (1 + BISECTIONS)
    assert search["steps"][0]["offered_rate"] is None  # the first step is unpaced
    assert all(step["offered_rate"] > 0 for step in search["steps"][1:])
    assert summary.lost == 0
