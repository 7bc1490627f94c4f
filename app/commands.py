"""``iotpipe``: the command line. Each command builds the configuration and calls one object.

The application sits on top: it imports the services, the stack and the packages that bring their
own commands (dashboard, loadtest, dead letters); nothing imports it back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from app.dead_letters import register as register_dead_letters
from dashboard.cli import register as register_dashboard
from iotpipe.cli import add_command
from iotpipe.config import MODEL_ARCHS, Config
from iotpipe.service import configure_logging, serve_metrics, stop_on_signals
from loadtest.cli import register as register_loadtest


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command with the configuration of ``environ`` (default: this process's IOTPIPE_* variables)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    try:
        config = Config.load(environ, **{name: getattr(args, name, None) for name in ("model_arch",)})
        return args.command(config, args) or 0
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        print(f"iotpipe {args.name}: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotpipe",
        description="IoT inference pipeline: cameras -> Kafka -> TorchServe -> Kafka -> CouchDB.",
        epilog="Settings come from IOTPIPE_* variables (e.g. IOTPIPE_BOOTSTRAP_SERVERS); see README.md.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        return add_command(commands, name, handler, help)

    up = command("up", cmd_up, "start Kafka, CouchDB, TorchServe, the bridge and the consumer; wait until healthy")
    up.add_argument("--model-arch", choices=MODEL_ARCHS, help="model to serve")
    down = command("down", cmd_down, "stop every component (data kept)")
    down.add_argument("--purge", action="store_true", help="also delete the data and logs under the state folder")
    command("status", cmd_status, "show each component: process, health, restarts, what it waits for")
    supervise = command(
        "supervise", cmd_supervise, "restart what dies in the embedded stack, renew TorchServe's keys (`up` starts it)"
    )
    supervise.add_argument("--ready-file", type=Path, help="file written once the supervisor runs")

    for name, handler, text in (
        ("bridge", cmd_bridge, "run the bridge (iot-images -> TorchServe -> iot-predictions) in the foreground"),
        ("consumer", cmd_consumer, "run the consumer (iot-predictions -> CouchDB) in the foreground"),
    ):
        service = command(name, handler, text)
        service.add_argument("--ready-file", type=Path, help="file written once the service is consuming")

    produce = command("produce", cmd_produce, "run one simulated camera and write its latencies")
    source = produce.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="ImageFolder tree of images (default: IOTPIPE_DATA_DIR)")
    source.add_argument("--cifar10-root", type=Path, help="folder holding cifar-10-batches-py (python batches)")
    produce.add_argument("--download", action="store_true", help="download the CIFAR-10 python batches if missing")
    produce.add_argument("--count", type=int, default=100, help="images to send (default 100)")
    produce.add_argument("--rate", type=float, default=5.0, help="images per second, 0 for as fast as possible")
    produce.add_argument("--producer-id", default="camera-1", help="this camera's id (the CloudEvents source)")
    produce.add_argument("--latency-file", type=Path, help="write id, sent, received, latency per image here")
    produce.add_argument("--timeout", type=float, default=30.0, help="seconds after which an image counts as lost")
    produce.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")

    models = command("models", lambda config, args: args.models_command(config, args), "manage model versions")
    actions = models.add_subparsers(title="actions", required=True, metavar="ACTION")

    def action(name: str, handler, help: str, *arguments: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help, description=help)
        sub.set_defaults(models_command=handler)
        for argument in arguments:
            sub.add_argument(argument)
        return sub

    build = action("build", cmd_models_build, "archive CIFAR-10 ResNets as versioned .mar files in model-store/")
    build.add_argument("archs", nargs="*", default=list(MODEL_ARCHS))
    build.add_argument("--force", action="store_true", help="rebuild archives that exist")
    action("list", cmd_models_list, "list registered models and versions")
    action(
        "register", cmd_models_register, "register MODEL VERSION from model-store/ and warm it up", "model", "version"
    )
    action("set-default", cmd_models_set_default, "make VERSION the default of MODEL", "model", "version")
    scale = action("scale", cmd_models_scale, "set the number of workers of a version", "model", "version")
    scale.add_argument("--workers", type=int, required=True, help="workers (minimum and maximum)")
    action("unregister", cmd_models_unregister, "retire a version (not the default one)", "model", "version")

    results = command("results", lambda config, args: args.results_command(config, args), "query stored results")
    queries = results.add_subparsers(title="queries", required=True, metavar="QUERY")
    accuracy = queries.add_parser("accuracy", help="accuracy and count per model version, against ground_truth")
    accuracy.set_defaults(results_command=cmd_results_accuracy)
    accuracy.add_argument("--producer-id", help="only the images of this producer")

    register_loadtest(commands)
    register_dashboard(commands)
    register_dead_letters(commands)
    return parser


def cmd_up(config: Config, args) -> int:
    from stack import Stack

    Stack(config).up(progress=lambda line: print(line, flush=True))
    return cmd_status(config, args)


def cmd_down(config: Config, args) -> None:
    from stack import Stack

    stopped = Stack(config).down(purge=args.purge)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def cmd_status(config: Config, args) -> int:
    from stack import Stack

    rows = Stack(config).status()
    print(f"{'component':<12} {'process':<9} {'health':<9} {'restarts':>8}  detail")
    for row in rows:
        process = "running" if row.running else "stopped"
        health = "healthy" if row.healthy else "down"
        print(f"{row.name:<12} {process:<9} {health:<9} {row.restarts:>8}  {row.detail}")
        if row.waiting:
            print(f"{'':<42}{row.waiting}")
    return 0 if all(row.healthy for row in rows) else 3


def cmd_supervise(config: Config, args) -> None:
    from stack import Stack
    from stack.supervisor import Supervisor

    supervisor = Supervisor(Stack(config), ready_file=args.ready_file)
    stop_on_signals(supervisor.stopping)
    supervisor.run()


def cmd_bridge(config: Config, args) -> None:
    from bridges import Bridge

    bridge = Bridge(config, ready_file=args.ready_file)
    stop_on_signals(bridge.stopping)
    bridge.run()


def cmd_consumer(config: Config, args) -> None:
    from consumer import StorageService

    storage = StorageService(config, ready_file=args.ready_file)
    stop_on_signals(storage.stopping)
    storage.run()


def cmd_produce(config: Config, args) -> int:
    from tqdm import tqdm

    from producer import Producer, cifar10_batches, image_folder

    serve_metrics(args.metrics_port, config.metrics_bind_address)
    if args.cifar10_root:
        images = cifar10_batches(args.cifar10_root, download=args.download)
    else:
        images = image_folder(args.images or config.data_dir)
    with tqdm(total=args.count, desc=f"{args.producer_id} sending", unit="img") as bar:
        producer = Producer(
            config,
            images,
            producer_id=args.producer_id,
            count=args.count,
            rate=args.rate,
            latency_file=args.latency_file,
            timeout_s=args.timeout,
            progress=bar.update,
        )
        report = producer.run()
    print(
        f"{report.producer_id}: sent {report.sent}, answered {report.answered}, lost {report.lost}, "
        f"refused unsent {report.refused}"
    )
    return 0 if report.lost == 0 and report.refused == 0 else 2


def cmd_models_build(config: Config, args) -> None:
    from model_archives import build_archive

    for arch in args.archs:
        print(build_archive(config, arch, force=args.force))


def cmd_models_list(config: Config, args) -> None:
    if config.model_server == "mlserver":
        return list_mlserver_models(config)
    from iotpipe.torchserve import ManagementClient

    management = ManagementClient(config)
    print(f"{'model':<18} {'version':<9} {'default':<8} {'workers':>7} {'batch':>6} {'delay ms':>9}  archive")
    for name in management.models():
        for v in management.versions(name):
            default = "yes" if v.is_default else ""
            print(
                f"{v.name:<18} {v.version:<9} {default:<8} {v.workers:>7} {v.batch_size:>6} {v.max_batch_delay:>9}"
                f"  {v.archive}"
            )


def list_mlserver_models(config: Config) -> None:
    from iotpipe.mlserver import served_versions

    print(f"{'model':<18} {'version':<9} {'default':<8} {'state':<12} reason")
    for v in served_versions(config):
        print(f"{v.name:<18} {v.version:<9} {'yes' if v.is_default else '':<8} {v.state:<12} {v.reason}")


def cmd_models_register(config: Config, args) -> None:
    from model_archives import register_version

    register_version(config, args.model, args.version)
    print(f"registered and warmed up {args.model} {args.version}")


def cmd_models_set_default(config: Config, args) -> None:
    from iotpipe.torchserve import ManagementClient

    ManagementClient(config).set_default(args.model, args.version)
    print(f"{args.model} {args.version} is the default version")


def cmd_models_scale(config: Config, args) -> None:
    from iotpipe.torchserve import ManagementClient

    ManagementClient(config).scale(args.model, args.version, args.workers)
    print(f"{args.model} {args.version} has {args.workers} worker(s)")


def cmd_models_unregister(config: Config, args) -> None:
    from iotpipe.torchserve import ManagementClient

    ManagementClient(config).unregister(args.model, args.version)
    print(f"unregistered {args.model} {args.version}")


def cmd_results_accuracy(config: Config, args) -> None:
    from iotpipe import couch

    rows = couch.accuracy_by_version(couch.database(config), producer_id=args.producer_id)
    print(f"{'model version':<14} {'images':>7} {'correct':>8} {'accuracy':>9}")
    for version, (count, correct) in sorted(rows.items()):
        print(f"{version:<14} {count:>7} {correct:>8} {correct / count:>9.2%}")
