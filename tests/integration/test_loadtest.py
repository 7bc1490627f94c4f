"""A short load test against the running stack: every image answered, every result file written."""

import json

import pytest

from loadtest.latency_files import analyze
from loadtest.run import LoadTest

pytestmark = pytest.mark.integration

PRODUCERS = [1, 2]
COUNT = 8
STATS = ("p50", "p90", "p95", "p99", "max")


def test_a_short_load_test_answers_every_image_and_writes_its_report(stack, tmp_path):
    LoadTest(stack, PRODUCERS, rate=10.0, count=COUNT, out=tmp_path).run()

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"model", "model_version", "git_commit", "machine", "date"} <= summary.keys()
    assert [phase["producers"] for phase in summary["phases"]] == PRODUCERS
    for phase in summary["phases"]:
        assert phase["sent"] == phase["answered"] + phase["lost"] == phase["producers"] * COUNT
        assert phase["lost"] == 0
        assert phase["offered_rate"] == phase["producers"] * 10.0
        assert phase["throughput"] > 0
        assert [phase[name] for name in STATS] == sorted(phase[name] for name in STATS)

    for producers in PRODUCERS:
        files = sorted(tmp_path.glob(f"latency_p{producers}_lt-*-p{producers}-*.txt"))
        assert len(files) == producers
        assert analyze(files)[-1].stats.count == producers * COUNT
    assert "| producers |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
