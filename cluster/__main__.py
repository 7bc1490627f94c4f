"""python -m cluster build|up|down|status|import-image|ctr|verify|kubeconfig: the local single-node Kubernetes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cluster.build import Builder, BuildError
from cluster.cluster import Cluster, ClusterError, format_rows
from cluster.config import ClusterConfig
from cluster.node import NodeError


def cmd_build(cluster: Cluster, args: argparse.Namespace) -> int:
    timings = Builder(cluster.config).build()
    print(f"built: {json.dumps(timings)}" if timings else "everything was built already")
    return 0


def cmd_up(cluster: Cluster, args: argparse.Namespace) -> int:
    timings = cluster.up()
    print(format_rows(cluster.status()))
    print(f"kubeconfig: {cluster.config.kubeconfig}")
    print(f"memory: {cluster.resident_memory()}; seconds: {json.dumps(timings)}")
    return 0


def cmd_down(cluster: Cluster, args: argparse.Namespace) -> int:
    report = cluster.down()
    left = {key: value for key, value in report.items() if value and key not in ("seconds", "sysctls restored")}
    for name, change in report["sysctls restored"].items():
        print(f"restored sysctl {name}: {change}")
    if left:
        print(f"left behind after {report['seconds']} s: {json.dumps(left)}", file=sys.stderr)
        return 1
    print(f"cluster down in {report['seconds']} s: no process, mount, veth, cgroup or changed sysctl left")
    return 0


def cmd_status(cluster: Cluster, args: argparse.Namespace) -> int:
    rows = cluster.status()
    print(format_rows(rows))
    if rows[0].running:
        print(f"kubeconfig: {cluster.config.kubeconfig}")
        print(f"memory: {cluster.resident_memory()}")
    return 0 if all(row.healthy for row in rows) else 3


def cmd_import_image(cluster: Cluster, args: argparse.Namespace) -> int:
    cluster.import_image(Path(args.tarball))
    return 0


def cmd_ctr(cluster: Cluster, args: argparse.Namespace) -> int:
    """containerd's ctr inside the node, in kubelet's namespace; standard input and output pass through."""
    return cluster.node.enter(cluster.ctr_command(*args.arguments), check=False).returncode


def cmd_verify(cluster: Cluster, args: argparse.Namespace) -> int:
    from cluster.verify import verify

    print(f"verified: {json.dumps(verify(cluster))}")
    return 0


def cmd_kubeconfig(cluster: Cluster, args: argparse.Namespace) -> int:
    print(cluster.config.kubeconfig)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m cluster",
        description="A local single-node Kubernetes on this machine, isolated in its own namespaces "
        "(state and builds under .cache/cluster, or IOTPIPE_CLUSTER_DIR).",
    )
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the binaries and images the cluster needs (cached)").set_defaults(
        run=cmd_build
    )
    commands.add_parser(
        "up", help="build what is missing and start the cluster; returns when pods can run"
    ).set_defaults(run=cmd_up)
    commands.add_parser("down", help="stop everything, restore host sysctls, check nothing is left").set_defaults(
        run=cmd_down
    )
    commands.add_parser("status", help="each component: process, health, detail (exit 3 if one is down)").set_defaults(
        run=cmd_status
    )
    image = commands.add_parser("import-image", help="import an image tarball (podman/docker save) into the node")
    image.add_argument("tarball", help="docker-archive or OCI archive")
    image.set_defaults(run=cmd_import_image)
    ctr = commands.add_parser(
        "ctr", help="run containerd's ctr in the node (namespace k8s.io), e.g. `ctr images import - < image.tar`"
    )
    ctr.add_argument("arguments", nargs=argparse.REMAINDER, help="ctr's arguments")
    ctr.set_defaults(run=cmd_ctr)
    commands.add_parser(
        "verify", help="check a Deployment with a readiness probe, a Service by DNS name and a bound PVC"
    ).set_defaults(run=cmd_verify)
    commands.add_parser("kubeconfig", help="print the admin kubeconfig's path").set_defaults(run=cmd_kubeconfig)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.monotonic()
    try:
        code = args.run(Cluster(ClusterConfig.from_env()), args)
    except (BuildError, ClusterError, NodeError) as error:
        print(f"cluster {args.command}: {error}", file=sys.stderr)
        return 1
    if args.command in ("up", "down", "build"):
        print(f"cluster {args.command}: {time.monotonic() - started:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
