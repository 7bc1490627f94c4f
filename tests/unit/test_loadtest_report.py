"""Load-test results: latency files read back, phases added up, summary.json, report.md and the plot."""

import argparse
import json

import pytest

from loadtest.bench import Ceiling
from loadtest.cli import counts, rate
from loadtest.latency_files import analyze, read_latencies, write_latencies
from loadtest.provenance import cpu_model
from loadtest.report import markdown_table, write_report
from loadtest.summary import Phase, Summary
from producer import ProducerReport

PRODUCER_FILE = """\
# image_id\tsent_unix_s\treceived_unix_s\tlatency_s (lost: not answered in time)
a\t1700000000.000000\t1700000000.100000\t0.100000
b\t1700000000.200000\tlost\tlost
c\t1700000000.400000\t1700000000.700000\t0.300000
"""

PROVENANCE = {
    "model": "cifar10-resnet",
    "model_version": "20.1",
    "model_arch": "resnet20",
    "git_commit": "0123456789abcdef",
    "machine": {"cpu_model": "Test CPU", "cores": 2, "memory_bytes": 2 * 1024**3, "memory_gib": 2.0},
    "date": "2026-01-01T00:00:00+00:00",
}
SETTINGS = {"rate_per_producer": 5.0, "count_per_producer": 2, "timeout_s": 30.0, "images": "data"}


def test_the_load_tests_own_latency_files_read_back_as_written(tmp_path):
    path = tmp_path / "latency.txt"
    write_latencies(path, [0.25, 0.5])
    assert read_latencies(path).latencies == [0.25, 0.5]
    assert read_latencies(path).lost == 0


def test_a_producer_latency_file_gives_its_latencies_and_counts_lost_images(tmp_path):
    path = tmp_path / "producer.tsv"
    path.write_text(PRODUCER_FILE)
    sample = read_latencies(path)
    assert sample.latencies == [0.1, 0.3]
    assert sample.lost == 1


def test_a_line_that_is_not_a_latency_is_reported_with_its_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0.1\nfast\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: 'fast'"):
        read_latencies(path)


def test_analyze_reports_each_file_and_all_of_them_together(tmp_path):
    plain, producer = tmp_path / "plain.txt", tmp_path / "producer.tsv"
    plain.write_text("0.2\n")
    producer.write_text(PRODUCER_FILE)
    rows = {row.name: row for row in analyze([plain, producer])}
    assert rows[str(producer)].stats.count == 2
    assert rows["all"].stats.count == 3
    assert rows["all"].lost == 1
    assert rows["all"].stats.p50 == pytest.approx(0.2)


def test_analyze_says_which_file_has_no_answered_image(tmp_path):
    path = tmp_path / "all-lost.tsv"
    path.write_text("x\t1.0\tlost\tlost\n")
    with pytest.raises(ValueError, match=r"all-lost\.tsv: no answered image"):
        analyze([path])


def phase(producers: int, rate_per_producer: float = 5.0) -> Phase:
    reports = [
        ProducerReport(f"p{i}", sent=2, answered=2, latencies=[0.1, 0.2], duration_s=2.0) for i in range(producers)
    ]
    reports[0] = ProducerReport("p0", sent=2, answered=1, latencies=[0.4], duration_s=4.0)
    return Phase.from_reports(producers, rate_per_producer, reports)


def test_a_phase_adds_up_its_producers_and_lasts_as_long_as_the_slowest():
    result = phase(2)
    assert (result.sent, result.answered, result.lost) == (4, 3, 1)
    assert result.offered_rate == 10.0
    assert result.throughput == pytest.approx(3 / 4.0)
    assert result.stats.max == pytest.approx(0.4)


def test_a_phase_sending_as_fast_as_possible_has_no_offered_rate():
    assert phase(1, rate_per_producer=0).offered_rate is None


def test_the_ceiling_is_the_fastest_batch_size():
    ceiling = Ceiling({1: 100.0, 16: 800.0, 64: 700.0}, images=512, torch_threads=2)
    assert (ceiling.best_batch_size, ceiling.images_per_s) == (16, 800.0)


def test_summary_json_has_the_provenance_each_phase_and_the_ceiling_ratio(tmp_path):
    summary = Summary(PROVENANCE, SETTINGS, Ceiling({8: 10.0}, images=8, torch_threads=1), [phase(1), phase(2)])
    write_report(tmp_path, summary)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert {"model", "model_version", "git_commit", "machine", "date"} <= written.keys()
    for row in written["phases"]:
        assert {"producers", "offered_rate", "throughput", "p50", "p90", "p95", "p99", "max"} <= row.keys()
        assert row["sent"] == row["answered"] + row["lost"]
    assert written["ceiling"]["pipeline_to_ceiling"] == pytest.approx(max(p.throughput for p in summary.phases) / 10)
    assert "| producers |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_markdown_table_aligns_names_left_and_numbers_right_to_the_widest_cell():
    table = markdown_table(["a", "bb"], [["100", "1"]])
    assert table.splitlines() == ["| a   | bb |", "| --- | -- |", "| 100 |  1 |"]


def test_producer_counts_and_rates_parse_as_the_command_line_promises():
    assert counts("1,2,5") == [1, 2, 5]
    assert rate("max") == 0.0
    assert rate("2.5") == 2.5
    for bad in ("0", "-1", "fast", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            rate(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        counts("1,0")


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU @ 3.00GHz\n")
    assert cpu_model(cpuinfo) == "Test CPU @ 3.00GHz"
