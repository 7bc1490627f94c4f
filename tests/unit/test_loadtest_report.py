"""Load-test results: latency files read back, phases added up, summary.json, report.md and the plot."""

import argparse
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.bench import Ceiling
from loadtest.cli import counts, duration, rate
from loadtest.latency_files import analyze, read_latencies, write_latencies
from loadtest.provenance import cpu_model
from loadtest.report import markdown_table, write_report
from loadtest.search import BISECTIONS, search_slo
from loadtest.stats import latency_stats
from loadtest.summary import KNEE_FACTOR, Phase, SloSearch, Summary, find_knee
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
SETTINGS = {
    "rate_per_producer": 5.0,
    "count_per_producer": 2,
    "timeout_s": 30.0,
    "images": "data",
    "processes": 1,
    "slo_p95_s": None,
}


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


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_any_file_reads_as_latencies_or_says_which_line_is_not_one(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("latencies") / "any.txt"
    path.write_text(text)
    try:
        sample = read_latencies(path)
    except ValueError as error:
        assert str(error).startswith(f"{path}:")
    else:
        assert len(sample.latencies) + sample.lost <= len(text.splitlines())


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
        ProducerReport(f"p{i}", sent=2, answered=2, latencies=[0.1, 0.2], duration_s=2.0, first_latency=0.1)
        for i in range(producers)
    ]
    reports[0] = ProducerReport("p0", sent=2, answered=1, latencies=[0.4], duration_s=4.0)
    return Phase.from_reports(producers, rate_per_producer, reports, loadgen_cpu_s=1.0)


def test_a_phase_adds_up_its_producers_and_lasts_as_long_as_the_slowest():
    result = phase(2)
    assert (result.sent, result.answered, result.lost) == (4, 3, 1)
    assert result.offered_rate == 10.0
    assert result.throughput == pytest.approx(3 / 4.0)
    assert result.stats.max == pytest.approx(0.4)
    assert result.loadgen_cores == pytest.approx(1.0 / 4.0)


def test_a_phase_reports_the_worst_cameras_first_image_against_that_cameras_median():
    reports = [
        ProducerReport("warm", sent=3, answered=3, latencies=[0.02, 0.02, 0.04], duration_s=1, first_latency=0.02),
        ProducerReport("cold", sent=3, answered=3, latencies=[0.15, 0.03, 0.05], duration_s=1, first_latency=0.15),
        ProducerReport("first lost", sent=2, answered=1, latencies=[0.03], duration_s=1),
    ]
    assert Phase.from_reports(3, 5.0, reports).first_to_median == pytest.approx(0.15 / 0.05)


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
        assert {"first_to_median", "loadgen_cpu_s", "loadgen_cores", "processes"} <= row.keys()
        assert row["sent"] == row["answered"] + row["lost"]
    best = max(p.throughput for p in summary.phases)
    assert written["ceiling"]["pipeline_to_ceiling"] == pytest.approx(best / 10)
    # the fastest phase's load generator kept a quarter of one of the two cores busy
    assert written["ceiling"]["pipeline_only_to_ceiling"] == pytest.approx(best / 10 / (1 - 0.25 / 2))
    assert "knee" in written and "knee_rule" in written
    report = (tmp_path / "report.md").read_text()
    assert "| producers |" in report
    assert all(f"{name} ms" in report for name in ("p95", "p99", "max"))
    assert "first/median" in report and "loadgen cores" in report
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


def measured(producers: int, rate: float, p95: float, answered_share: float = 1.0, lost: int = 0) -> Phase:
    """A phase of 100 images per camera that took as long as the offered rate says, with this p95."""
    sent = producers * 100
    duration = 100 / rate if rate else 1.0
    answered = sent - lost
    latencies = [p95] * answered
    return Phase(
        producers,
        producers * rate or None,
        sent,
        answered,
        duration / answered_share,
        latency_stats(latencies),
        latencies,
    )


def test_the_knee_is_the_first_camera_count_whose_p95_more_than_doubles():
    phases = [measured(1, 5, 0.020), measured(5, 5, 0.035), measured(20, 5, 0.041), measured(50, 5, 0.300)]
    assert KNEE_FACTOR == 2
    knee = find_knee(phases)
    assert knee.phase.producers == 20
    assert "p95 41.0 ms, over 2 x 20.0 ms at 1 x 5" in knee.reason
    assert "load generator used" in knee.reason


def test_the_knee_is_where_answers_fall_behind_or_images_are_lost_before_p95_doubles():
    behind = [measured(1, 5, 0.020), measured(5, 5, 0.021, answered_share=0.5), measured(9, 5, 0.5)]
    assert find_knee(behind).phase.producers == 5
    assert "answered 12.5 images/s of 25 offered" in find_knee(behind).reason
    lost = [measured(1, 5, 0.020), measured(5, 5, 0.021, lost=1)]
    assert "1 of 500 images lost" in find_knee(lost).reason


def test_no_knee_when_every_phase_keeps_up_and_unpaced_phases_have_none():
    assert find_knee([measured(1, 5, 0.020), measured(5, 5, 0.039)]) is None
    assert find_knee([measured(1, 0, 0.020), measured(5, 0, 0.500)]) is None


def test_the_slo_search_bisects_between_nothing_and_the_unpaced_throughput():
    """A pipeline that keeps p95 under 100 ms up to 300 images/s offered and answers 400 unpaced."""
    rates: list[float] = []

    def measure(rate: float) -> Phase:
        rates.append(rate)
        if rate == 0:
            return measured(4, 0, 0.900)  # 400 images in a second
        return measured(4, rate, 0.050 if 4 * rate <= 300 else 0.200)

    search = search_slo(measure, producers=4, slo_p95_s=0.100)
    assert rates == [0, 50, 75, 87.5, 81.25][: 1 + BISECTIONS]
    assert search.best.offered_rate == 4 * 75
    assert [search.within(step) for step in search.steps] == [False, True, True, False, False]
    assert search.as_dict()["best_offered_rate"] == 300


def test_the_slo_search_stops_at_once_when_even_unpaced_load_is_within_the_bound():
    search = search_slo(lambda rate: measured(2, rate, 0.010), producers=2, slo_p95_s=0.100)
    assert len(search.steps) == 1
    assert search.best is search.steps[0]


def test_a_search_is_reported_step_by_step_with_its_verdict(tmp_path):
    steps = [measured(2, 0, 0.5), measured(2, 50, 0.05), measured(2, 75, 0.2)]
    search = SloSearch(2, 0.1, steps)
    settings = SETTINGS | {"rate_per_producer": None, "slo_p95_s": 0.1}
    write_report(tmp_path, Summary(PROVENANCE, settings, phases=steps, searches=[search]))
    report = (tmp_path / "report.md").read_text()
    assert "highest load within p95 <= 100 ms with nothing lost: offered 100.0 images/s (2 x 50)" in report
    assert json.loads((tmp_path / "summary.json").read_text())["slo_search"][0]["best_offered_rate"] == 100


def test_durations_parse_in_milliseconds_or_seconds():
    assert duration("100ms") == pytest.approx(0.1)
    assert duration("0.25s") == duration("0.25") == 0.25
    for bad in ("0ms", "-5ms", "fast", "ms", "nanms", "infs", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)


@given(st.text(max_size=12))
def test_a_duration_is_a_positive_finite_number_of_seconds_or_refused_with_an_example(text):
    try:
        value = duration(text)
    except argparse.ArgumentTypeError as error:
        assert "e.g. 100ms" in str(error)
    else:
        assert 0 < value < float("inf")


@given(st.floats(min_value=1e-3, max_value=1e6))
def test_a_duration_in_milliseconds_is_a_thousandth_of_the_same_in_seconds(value):
    assert duration(f"{value!r}ms") == pytest.approx(duration(f"{value!r}s") / 1000)
