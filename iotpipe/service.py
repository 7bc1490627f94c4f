"""What the long-running services share: logging set-up, stop on signals, a ready file."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from prometheus_client import start_http_server

from iotpipe.wire import now_iso


def mark_ready(path: Path) -> None:
    """Tell `iotpipe up` that the service has joined its consumer group and is working."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(now_iso())


def serve_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Expose this process's Prometheus metrics on address:port/metrics (port 0: not at all)."""
    if port:
        start_http_server(port, addr=address)


def stop_on_signals(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT finish the current batch, then stop."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
