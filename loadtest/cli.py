"""The load-test commands of ``iotpipe`` (loadtest, analyze, bench)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from iotpipe.cli import add_command
from iotpipe.config import Config, ModelServer

if TYPE_CHECKING:
    from loadtest.summary import Summary

MODEL_SERVERS: tuple[str, ...] = get_args(ModelServer)
BOTH = "both"

BATCH_SIZES = "1,4,8,16,32,64"


def register(commands) -> None:
    """Add the load-test subcommands to the ``iotpipe`` parser."""
    loadtest = add_command(
        commands, "loadtest", cmd_loadtest, "run 1..N producers in turn against the running stack and report latencies"
    )
    loadtest.add_argument("--producers", type=counts, default=[1, 2, 3, 4, 5], help="producer counts, e.g. 1,2,3,4,5")
    loadtest.add_argument("--rate", type=rate, default=5.0, help="images/s per producer, or 'max' (as fast as it can)")
    loadtest.add_argument("--count", type=positive, default=60, help="images per producer in each phase (default 60)")
    loadtest.add_argument("--out", type=Path, required=True, help="folder for latency files, summary.json, report.md")
    loadtest.add_argument("--images", type=Path, help="ImageFolder tree of images (default: IOTPIPE_DATA_DIR)")
    loadtest.add_argument("--timeout", type=float, default=30.0, help="seconds after which an image counts as lost")
    loadtest.add_argument("--ceiling", action="store_true", help="also measure the bare-model ceiling (iotpipe bench)")
    loadtest.add_argument(
        "--processes", type=positive, default=1, help="load-generator processes hosting the cameras (default 1)"
    )
    loadtest.add_argument(
        "--slo-p95",
        type=duration,
        help="with --rate max: search the highest offered load whose p95 stays within this, e.g. 100ms",
    )
    loadtest.add_argument(
        "--open-loop-count",
        type=positive,
        metavar="N",
        help="after the paced phases, one open-loop phase (the most cameras, unpaced) of N images per camera "
        "(default: none; with --model-server, --count)",
    )
    loadtest.add_argument(
        "--model-server",
        type=model_servers,
        metavar="|".join((*MODEL_SERVERS, BOTH)),
        help="restart the stack with this model server, or each in turn, and measure it into OUT/SERVER/, "
        "with OUT/comparison.md and .png; the stack runs again afterwards if it ran before "
        "(default: measure the running stack as it is)",
    )
    model_arch_argument(loadtest)

    bench_help = "images/s of the bare model (the handler's preprocessing + forward pass) per batch size"
    bench = add_command(commands, "bench", cmd_bench, bench_help)
    bench.add_argument("--images", type=Path, help="ImageFolder tree of images (default: IOTPIPE_DATA_DIR)")
    bench.add_argument("--count", type=positive, default=512, help="images classified per batch size (default 512)")
    bench.add_argument("--batch-sizes", type=counts, default=counts(BATCH_SIZES), help=f"default {BATCH_SIZES}")
    bench.add_argument(
        "--repeats", type=positive, default=3, help="passes per batch size; the fastest counts (default 3)"
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    model_arch_argument(bench)

    analyze = add_command(commands, "analyze", cmd_analyze, "latency percentiles of latency files, each and combined")
    analyze.add_argument("files", nargs="+", type=Path, help="one latency per line, or producer --latency-file files")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")


def model_arch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-arch", help="model the stack serves, e.g. resnet20 (default: IOTPIPE_MODEL_ARCH)")


def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be at least 1")
    return values


def model_servers(text: str) -> tuple[str, ...]:
    """The model servers to measure, in order: one, or every one for 'both'."""
    if text == BOTH:
        return MODEL_SERVERS
    if text in MODEL_SERVERS:
        return (text,)
    raise argparse.ArgumentTypeError(f"{text!r}: give {', '.join(MODEL_SERVERS)} or {BOTH}")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return value


def rate(text: str) -> float:
    """Images per second; 'max' is 0, which the producer reads as 'no pacing'."""
    if text == "max":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: give images per second above 0, or 'max'")
    return value


def duration(text: str) -> float:
    """Seconds from '100ms', '0.1s' or '0.1' (seconds)."""
    number, scale = (text[:-2], 1e-3) if text.endswith("ms") else (text.removesuffix("s"), 1.0)
    try:
        value = float(number) * scale
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration above 0, e.g. 100ms or 0.1s")
    return value


def cmd_loadtest(config: Config, args) -> int:
    from loadtest.report import comparison_table
    from loadtest.run import LoadTest, new_run_id
    from loadtest.servers import ServerComparison

    if args.slo_p95 is not None and args.rate > 0:
        raise SystemExit("--slo-p95 searches for the highest rate: use it with --rate max")
    if args.open_loop_count is not None and args.rate == 0:
        raise SystemExit("--open-loop-count adds an unpaced phase to paced ones: with --rate max every phase is one")
    run_id = new_run_id()  # one for every server: the same camera ids, so the same schedules

    def measure(config: Config, out: Path) -> Summary:
        return LoadTest(
            config,
            args.producers,
            args.rate,
            args.count,
            out,
            args.images,
            args.timeout,
            args.ceiling,
            args.processes,
            args.slo_p95,
            open_loop_count(args),
            run_id,
        ).run()

    if args.model_server is None:
        summary = measure(config, args.out)
        print_summary(summary)
        print(f"results in {args.out}")
        return 0 if summary.lost == 0 else 2
    summaries = ServerComparison(config, args.model_server, measure, args.out).run()
    for server, summary in summaries.items():
        print(f"\n{server}:")
        print_summary(summary)
    print(f"\n{comparison_table(summaries)}")
    print(f"results in {args.out}: one folder per server, comparison.md, comparison.png")
    return 0 if all(summary.lost == 0 for summary in summaries.values()) else 2


def open_loop_count(args) -> int | None:
    """A comparison of paced phases measures open-loop throughput too, of --count images unless told."""
    if args.open_loop_count is None and args.model_server is not None and args.rate > 0:
        return args.count
    return args.open_loop_count


def print_summary(summary: Summary) -> None:
    from loadtest.report import ceiling_line, knee_line, phase_table, search_section

    print(phase_table(summary))
    for search in summary.searches:
        print(search_section(search))
    if not summary.searches:
        print(knee_line(summary))
    if summary.ceiling is not None:
        print(f"bare-model ceiling {summary.ceiling.images_per_s:.0f} images/s. {ceiling_line(summary)}")


def cmd_bench(config: Config, args) -> None:
    from loadtest.bench import Bench
    from loadtest.report import ceiling_table

    ceiling = Bench(config, args.images, args.count, args.batch_sizes, args.repeats).run()
    if args.json:
        print(json.dumps(ceiling.as_dict(), indent=2))
        return
    print(ceiling_table(ceiling))
    print(f"best: {ceiling.images_per_s:.0f} images/s at batch size {ceiling.best_batch_size}")


def cmd_analyze(config: Config, args) -> None:
    from loadtest.latency_files import analyze
    from loadtest.report import analysis_table

    analyses = analyze(args.files)
    print(json.dumps([a.as_dict() for a in analyses], indent=2) if args.json else analysis_table(analyses))
