"""The ``iotpipe dashboard`` command."""

from __future__ import annotations

from iotpipe.cli import add_command
from iotpipe.config import Config


def register(commands) -> None:
    """Add the dashboard subcommand to the ``iotpipe`` parser."""
    dashboard = add_command(
        commands,
        "dashboard",
        cmd_dashboard,
        "serve a live page on 127.0.0.1: throughput, latency, lag, latest images, accuracy, dead letters",
    )
    dashboard.add_argument("--port", type=int, help="port on 127.0.0.1 (default: IOTPIPE_DASHBOARD_PORT, 8050)")


def cmd_dashboard(config: Config, args) -> None:
    from dashboard.server import Dashboard

    dashboard = Dashboard(config, port=args.port)
    print(f"dashboard at {dashboard.url} (Ctrl-C stops it)", flush=True)
    dashboard.serve()
