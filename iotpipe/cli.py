"""``iotpipe``: the command line. Each command builds the configuration and calls one object."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iotpipe.config import Config
from iotpipe.service import configure_logging, stop_on_signals


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    config = Config.load(**{name: getattr(args, name, None) for name in ("model_arch",)})
    try:
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
    up.add_argument("--model-arch", choices=["resnet20", "resnet32", "resnet44", "resnet56"], help="model to serve")
    down = command("down", cmd_down, "stop every component (data kept)")
    down.add_argument("--purge", action="store_true", help="also delete the data and logs under the state folder")
    command("status", cmd_status, "show each component and whether it is healthy")

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

    models = command("models", lambda config, args: args.models_command(config, args), "build model archives")
    model_commands = models.add_subparsers(title="models commands", required=True, metavar="ACTION")
    build = model_commands.add_parser("build", help="archive the CIFAR-10 ResNets as .mar files in model-store/")
    build.set_defaults(models_command=cmd_models_build)
    build.add_argument("archs", nargs="*", default=["resnet20", "resnet32", "resnet44", "resnet56"])
    build.add_argument("--force", action="store_true", help="rebuild archives that exist")

    from dashboard.cli import register as register_dashboard
    from loadtest.cli import register as register_loadtest

    register_loadtest(commands)
    register_dashboard(commands)
    return parser


def add_command(commands, name: str, handler, help: str) -> argparse.ArgumentParser:
    """A subcommand whose handler is called as handler(config, args)."""
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(command=handler, name=name)
    sub.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return sub


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
    print(f"{'component':<12} {'process':<9} {'health':<9} detail")
    for row in rows:
        process = "running" if row.running else "stopped"
        health = "healthy" if row.healthy else "down"
        print(f"{row.name:<12} {process:<9} {health:<9} {row.detail}")
    return 0 if all(row.healthy for row in rows) else 3


def cmd_bridge(config: Config, args) -> None:
    from bridges import Bridge

    bridge = Bridge(config, ready_file=args.ready_file)
    stop_on_signals(bridge.stopping)
    bridge.run()


def cmd_consumer(config: Config, args) -> None:
    from consumer import Consumer

    consumer = Consumer(config, ready_file=args.ready_file)
    stop_on_signals(consumer.stopping)
    consumer.run()


def cmd_produce(config: Config, args) -> int:
    from tqdm import tqdm

    from producer import Producer, cifar10_batches, image_folder

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
    print(f"{report.producer_id}: sent {report.sent}, answered {report.answered}, lost {report.lost}")
    return 0 if report.lost == 0 else 2


def cmd_models_build(config: Config, args) -> None:
    from stack.models import build_archive

    for arch in args.archs:
        print(build_archive(config, arch, force=args.force))


if __name__ == "__main__":
    sys.exit(main())
