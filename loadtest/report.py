"""A load test's results as files: summary.json, report.md (tables) and latency.png (two panels).

Load tests of several model servers side by side (loadtest/servers.py): comparison.md and comparison.png.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtest.bench import Ceiling
from loadtest.latency_files import Analysis
from loadtest.search import BISECTIONS
from loadtest.stats import PERCENTILES, LatencyStats
from loadtest.summary import KNEE_RULE, MS, Phase, SloSearch, Summary
from producer.schedule import JITTER

STATS = [f"p{rank}" for rank in PERCENTILES] + ["max"]  # LatencyStats fields, as shown
STAT_HEADERS = [f"{name} ms" for name in STATS]


def write_report(out: Path, summary: Summary) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(summary))
    plot_latency(summary, out / "latency.png")


def markdown_report(summary: Summary) -> str:
    sections = [f"# Load test: {model_line(summary)}", setting_line(summary), phase_table(summary)]
    sections.append(COLUMNS)
    if summary.searches:
        sections += ["## Highest offered load within the p95 bound", *map(search_section, summary.searches)]
    else:
        sections.append(knee_line(summary))
    if summary.ceiling is not None:
        sections += [
            "## Bare-model ceiling (preprocessing + forward, in process)",
            ceiling_table(summary.ceiling),
            ceiling_line(summary),
        ]
    sections.append("![Latency percentiles and CDF per producer count](latency.png)")
    return "\n\n".join(sections) + "\n"


def model_line(summary: Summary) -> str:
    p = summary.provenance
    return f"{p['model']} {p['model_version']} ({p['model_arch']})"


def setting_line(summary: Summary) -> str:
    p, s, m = summary.provenance, summary.settings, summary.provenance["machine"]
    return (
        f"{p['date']}, commit {p['git_commit'][:12]}, {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB.  \n"
        f"Each producer sends {s['count_per_producer']} images {rate_text(s['rate_per_producer'])}, open loop; "
        f"an image not answered within {s['timeout_s']:g} s counts as lost. Images from {s['images']}.  \n"
        f"{s['processes']} load-generator process(es) host the cameras, each connected and positioned before "
        f"the clock starts; each camera starts at a random phase of its interval and sends with up to "
        f"{JITTER:.0%} of it as jitter.{search_text(s['slo_p95_s'], s['rate_per_producer'])}"
        f"{open_loop_text(s.get('open_loop_count_per_producer'))}"
    )


def open_loop_text(count: int | None) -> str:
    if not count:
        return ""
    return f" Then one open-loop phase: the most cameras send {count} images each as fast as they can."


def search_text(slo_p95_s: float | None, rate: float | None) -> str:
    if slo_p95_s is None or rate is not None:
        return ""
    return (
        f" For each camera count, an unpaced step, then {BISECTIONS} steps bisecting the rate per camera, "
        f"look for the highest offered load with p95 <= {slo_p95_s * MS:g} ms (each step a row below)."
    )


COLUMNS = (
    "first/median: the worst camera's first-image latency over its own median (1.0: no cold start). "
    "loadgen cores: CPU seconds the load generator's processes used per second of the phase, "
    "on the same machine as the pipeline."
)


def knee_line(summary: Summary) -> str:
    knee = summary.knee
    found = "none in these phases" if knee is None else f"at {knee.phase.label} images/s: {knee.reason}"
    return f"Knee ({KNEE_RULE}): {found}."


def search_section(search: SloSearch) -> str:
    bound = f"p95 <= {search.slo_p95_s * MS:g} ms"
    rows = [
        [
            str(number),
            step.label,
            f"{step.throughput:.1f}",
            str(step.lost),
            f"{step.stats.p95 * MS:.1f}",
            "yes" if search.within(step) else "no",
        ]
        for number, step in enumerate(search.steps, start=1)
    ]
    table = markdown_table(["step", "cameras x img/s", "answered img/s", "lost", "p95 ms", "within"], rows)
    best = search.best
    if best is None:
        verdict = f"{search.producers} camera(s): no step kept {bound} with nothing lost."
    else:
        load = "unpaced" if best.offered_rate is None else f"offered {best.offered_rate:.1f} images/s"
        verdict = (
            f"{search.producers} camera(s): the highest load within {bound} with nothing lost: {load} "
            f"({best.label}), {best.throughput:.1f} images/s answered."
        )
    return f"{table}\n\n{verdict}"


def ceiling_line(summary: Summary) -> str:
    only = summary.pipeline_only_to_ceiling
    only_text = "n/a (the load generator used every core)" if only is None else f"{only:.1%}"
    return (
        f"The best pipeline throughput ({summary.fastest.label}) is {summary.pipeline_to_ceiling:.1%} of the "
        f"bare-model ceiling; against the ceiling scaled to the cores the load generator left free "
        f"({summary.fastest.loadgen_cores:.2f} of {summary.provenance['machine']['cores']} used), {only_text}."
    )


def rate_text(rate: float | None) -> str:
    return "as fast as it can" if rate is None else f"at {rate:g} images/s"


def phase_table(summary: Summary) -> str:
    headers = ["producers", "offered img/s", "sent", "answered", "lost", "throughput img/s", *STAT_HEADERS]
    headers += ["first/median", "loadgen cores"]
    rows = [
        [
            str(phase.producers),
            "max" if phase.offered_rate is None else f"{phase.offered_rate:g}",
            str(phase.sent),
            str(phase.answered),
            str(phase.lost),
            f"{phase.throughput:.1f}",
            *stat_cells(phase.stats),
            "n/a" if phase.first_to_median is None else f"{phase.first_to_median:.2f}",
            f"{phase.loadgen_cores:.2f}",
        ]
        for phase in summary.phases
    ]
    return markdown_table(headers, rows)


def ceiling_table(ceiling: Ceiling) -> str:
    rows = [[str(size), f"{rate:.0f}"] for size, rate in ceiling.images_per_s_by_batch_size.items()]
    return markdown_table(["batch size", "images/s"], rows)


def analysis_table(analyses: Sequence[Analysis]) -> str:
    headers = ["file", "count", "lost", "mean ms", *STAT_HEADERS]
    rows = [
        [a.name, str(a.stats.count), str(a.lost), f"{a.stats.mean * MS:.1f}", *stat_cells(a.stats)] for a in analyses
    ]
    return markdown_table(headers, rows)


def stat_cells(stats: LatencyStats) -> list[str]:
    return [f"{getattr(stats, name) * MS:.1f}" for name in STATS]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The first column aligned left (names), the others right (numbers)."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join(
        "| " + " | ".join([line[0].ljust(widths[0]), *map(str.rjust, line[1:], widths[1:])]) + " |" for line in lines
    )


def plot_latency(summary: Summary, path: Path) -> None:
    """Left: percentiles against producer count. Right: the latency CDF of each producer count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    plot_percentiles(left, summary.phases)
    plot_cdf(right, summary.phases)
    figure.suptitle(plot_title(summary))
    figure.savefig(path, dpi=110)


def plot_percentiles(axes, phases: Sequence[Phase]) -> None:
    """One point per phase, in the order run, labelled cameras x images/s each."""
    positions = range(len(phases))
    for name in STATS:
        axes.plot(positions, [getattr(phase.stats, name) * MS for phase in phases], marker="o", label=name)
    axes.set(title="Latency percentiles", xlabel="cameras x images/s each", ylabel="latency (ms)")
    axes.set_xticks(positions, [phase.label for phase in phases], rotation=30 if len(phases) > 6 else 0)
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="statistic")


def plot_cdf(axes, phases: Sequence[Phase]) -> None:
    from matplotlib.ticker import LogFormatter

    for phase in phases:
        ordered = sorted(latency * MS for latency in phase.latencies)
        fractions = [(index + 1) / len(ordered) for index in range(len(ordered))]
        label = f"{phase.label}: {phase.throughput:.1f} img/s answered, {phase.lost} lost"
        axes.step(ordered, fractions, where="post", label=label)
    axes.set(title="Latency CDF per producer count", xlabel="latency (ms, log scale)", xscale="log")
    axes.set(ylabel="fraction of images answered within", ylim=(0, 1.02))
    axes.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="cameras x images/s each")


def plot_title(summary: Summary) -> str:
    p, s, m = summary.provenance, summary.settings, summary.provenance["machine"]
    return (
        f"{model_line(summary)}: each producer sends {s['count_per_producer']} images "
        f"{rate_text(s['rate_per_producer'])}\n{p['date']}, {m['cores']} cores ({m['cpu_model']}), "
        f"commit {p['git_commit'][:12]}"
    )


def write_comparison(out: Path, summaries: Mapping[str, Summary]) -> None:
    """comparison.md and comparison.png of load tests that ran alike, one per server, in the order run."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(comparison_report(summaries))
    plot_comparison(summaries, out / "comparison.png")


def comparison_report(summaries: Mapping[str, Summary]) -> str:
    first = first_summary(summaries)
    sections = [
        f"# Model servers side by side: {model_line(first)}",
        f"{', '.join(summaries)}, one after the other on one stack, restarted with each server; the same images, "
        f"camera ids and schedules on each. {served_text(summaries)}  \n{setting_line(first)}",
        comparison_table(summaries),
        COMPARISON_COLUMNS,
        "![Latency percentiles and images/s answered by server](comparison.png)",
    ]
    return "\n\n".join(sections) + "\n"


def served_text(summaries: Mapping[str, Summary]) -> str:
    protocols = [f"{server} over {summary.settings['inference_protocol']}" for server, summary in summaries.items()]
    versions = {summary.settings["model_version_pinned"] or "the server's default" for summary in summaries.values()}
    return f"Protocols: {', '.join(protocols)}; model version: {', '.join(sorted(versions))}."


COMPARISON_COLUMNS = (
    "A row per closed-rate phase (cameras x images/s each), or per phase when none was paced. "
    "open loop img/s: the most images/s the server answered in an unpaced phase of the same run; "
    "vs first: that over the first server's."
)


def comparison_table(summaries: Mapping[str, Summary]) -> str:
    headers = ["server", "cameras x img/s", *STAT_HEADERS, "lost", "answered img/s", "open loop img/s", "vs first"]
    first = open_loop_throughput(first_summary(summaries))
    rows = []
    for server, summary in summaries.items():
        open_loop = open_loop_throughput(summary)
        open_loop_cells = [
            "n/a" if open_loop is None else f"{open_loop:.1f}",
            "n/a" if open_loop is None or not first else f"{open_loop / first:.2f}",
        ]
        rows += [
            [
                server,
                phase.label,
                *stat_cells(phase.stats),
                str(phase.lost),
                f"{phase.throughput:.1f}",
                *open_loop_cells,
            ]
            for phase in compared_phases(summary)
        ]
    return markdown_table(headers, rows)


def first_summary(summaries: Mapping[str, Summary]) -> Summary:
    return next(iter(summaries.values()))


def compared_phases(summary: Summary) -> list[Phase]:
    """The closed-rate phases, or every phase when none was paced."""
    return [phase for phase in summary.phases if phase.offered_rate is not None] or summary.phases


def open_loop_throughput(summary: Summary) -> float | None:
    return max((phase.throughput for phase in summary.phases if phase.offered_rate is None), default=None)


def plot_comparison(summaries: Mapping[str, Summary], path: Path) -> None:
    """Left: the compared phases' percentiles, a bar per server. Right: images/s answered in every phase."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    compared = {server: compared_phases(summary) for server, summary in summaries.items()}
    phases = compared_phases(first_summary(summaries))
    groups = [f"{name}\n{phase.label}" if len(phases) > 1 else name for phase in phases for name in STATS]
    latencies = {
        server: [getattr(phase.stats, name) * MS for phase in ps for name in STATS] for server, ps in compared.items()
    }
    bars(left, groups, latencies)
    left.set(title="Latency percentiles", ylabel="latency (ms)")
    labels = [phase.label for phase in first_summary(summaries).phases]
    throughputs = {server: [phase.throughput for phase in summary.phases] for server, summary in summaries.items()}
    bars(right, labels, throughputs)
    right.set(title="Images/s answered (x max: open loop)", xlabel="cameras x images/s each", ylabel="images/s")
    figure.suptitle(f"{' vs '.join(summaries)}: {plot_title(first_summary(summaries))}")
    figure.savefig(path, dpi=110)


def bars(axes, groups: Sequence[str], values: Mapping[str, Sequence[float]]) -> None:
    """Grouped bars: a group per name in ``groups``, in it a bar per series of ``values``, each bar labelled."""
    width = 0.8 / len(values)
    for index, (series, heights) in enumerate(values.items()):
        positions = [group + (index - (len(values) - 1) / 2) * width for group in range(len(groups))]
        axes.bar_label(axes.bar(positions, heights, width, label=series), fmt="%.0f", fontsize=8)
    axes.set_xticks(range(len(groups)), groups)
    axes.margins(y=0.25)  # room for the legend above the bars
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(title="model server", loc="upper right")
