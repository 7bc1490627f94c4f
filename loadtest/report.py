"""A load test's results as files: summary.json, report.md (tables) and latency.png (two panels)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from loadtest.bench import Ceiling
from loadtest.latency_files import Analysis
from loadtest.stats import PERCENTILES, LatencyStats
from loadtest.summary import Phase, Summary

MS = 1000.0
STAT_HEADERS = [f"p{rank} ms" for rank in PERCENTILES] + ["max ms"]


def write_report(out: Path, summary: Summary) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(summary))
    plot_latency(summary, out / "latency.png")


def markdown_report(summary: Summary) -> str:
    sections = [f"# Load test: {model_line(summary)}", setting_line(summary), phase_table(summary)]
    if summary.ceiling is not None:
        ratio = f"The best pipeline throughput is {summary.pipeline_to_ceiling:.1%} of the bare-model ceiling."
        sections += [
            "## Bare-model ceiling (preprocessing + forward, in process)",
            ceiling_table(summary.ceiling),
            ratio,
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
        f"an image not answered within {s['timeout_s']:g} s counts as lost. Images from {s['images']}."
    )


def rate_text(rate: float | None) -> str:
    return "as fast as it can" if rate is None else f"at {rate:g} images/s"


def phase_table(summary: Summary) -> str:
    headers = ["producers", "offered img/s", "sent", "answered", "lost", "throughput img/s", *STAT_HEADERS]
    rows = [
        [
            str(phase.producers),
            "max" if phase.offered_rate is None else f"{phase.offered_rate:g}",
            str(phase.sent),
            str(phase.answered),
            str(phase.lost),
            f"{phase.throughput:.1f}",
            *stat_cells(phase.stats),
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
    return [f"{value * MS:.1f}" for value in (stats.p50, stats.p90, stats.p95, stats.p99, stats.max)]


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
    counts = [phase.producers for phase in phases]
    for rank in PERCENTILES:
        axes.plot(counts, [getattr(phase.stats, f"p{rank}") * MS for phase in phases], marker="o", label=f"p{rank}")
    axes.set(title="Latency percentiles", xlabel="concurrent producers", ylabel="latency (ms)", xticks=counts)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(title="percentile")


def plot_cdf(axes, phases: Sequence[Phase]) -> None:
    from matplotlib.ticker import LogFormatter

    for phase in phases:
        ordered = sorted(latency * MS for latency in phase.latencies)
        fractions = [(index + 1) / len(ordered) for index in range(len(ordered))]
        label = f"{phase.producers}: {phase.throughput:.1f} img/s answered, {phase.lost} lost"
        axes.step(ordered, fractions, where="post", label=label)
    axes.set(title="Latency CDF per producer count", xlabel="latency (ms, log scale)", xscale="log")
    axes.set(ylabel="fraction of images answered within", ylim=(0, 1.02))
    axes.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="producers")


def plot_title(summary: Summary) -> str:
    p, s, m = summary.provenance, summary.settings, summary.provenance["machine"]
    return (
        f"{model_line(summary)}: each producer sends {s['count_per_producer']} images "
        f"{rate_text(s['rate_per_producer'])}\n{p['date']}, {m['cores']} cores ({m['cpu_model']}), "
        f"commit {p['git_commit'][:12]}"
    )
