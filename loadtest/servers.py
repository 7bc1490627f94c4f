"""``iotpipe loadtest --model-server torchserve|mlserver|both``: the same load test on each model server in turn.

Before anything stops, every server named must be installed. Then, on the one stack state folder, the
stack is stopped (whichever model server it ran) and, for each server: started with it through
``Stack.up``, which returns once every component is healthy and the bridge and the consumer have warmed
up; measured into ``<out>/<server>/``; stopped. ``measure`` must send alike on every server (the same
images, camera ids and so jitter: one ``LoadTest`` ``run_id``). ``<out>/comparison.md`` and
``comparison.png`` are rewritten after each server, so a run stopped early keeps what it measured.
At the end, the stack that ``config`` describes is started again if any of it ran before; otherwise
the stack stays stopped.

Each server is measured with its own protocol (TorchServe's native API, the stack's default; MLServer's
Open Inference Protocol, the only one it speaks) and the version of ``config.model_arch`` pinned unless
``config`` pins one: MLServer's unpinned default is its newest version, not the configured model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from iotpipe.config import SERVER_PROTOCOLS, Config, ModelServer
from loadtest.report import write_comparison
from loadtest.summary import Summary
from model_archives import model_version
from stack import Stack

SERVERS: tuple[str, ...] = get_args(ModelServer)

Measure = Callable[[Config, Path], Summary]  # one load test of the running stack, its files into the folder


def server_config(config: Config, server: str) -> Config:
    """``config`` with ``server`` as the model server, the protocol it is measured with and a pinned version."""
    return config.replace(
        model_server=server,
        inference_protocol=SERVER_PROTOCOLS[server][0],
        model_version=config.model_version or model_version(config.model_arch),
    )


@dataclass(frozen=True)
class ServerComparison:
    config: Config
    servers: Sequence[str]
    measure: Measure
    out: Path
    stack: Callable[[Config], Stack] = Stack
    progress: Callable[[str], object] = print

    def run(self) -> dict[str, Summary]:
        """Each server's summary, in the order measured; the stack afterwards as it was (running or not)."""
        self.check_installed()
        was_running = any(row.running for row in self.stack(self.config).status())
        self.stop()
        summaries: dict[str, Summary] = {}
        try:
            for server in self.servers:
                summaries[server] = self.measure_on(server)
                write_comparison(self.out, summaries)
        finally:
            if was_running:
                self.progress("the stack ran before: starting it again as configured")
                self.stack(self.config).up(progress=self.progress)
        return summaries

    def check_installed(self) -> None:
        missing = dict.fromkeys(
            item
            for server in self.servers
            for component in self.stack(server_config(self.config, server)).components
            for item in component.missing()
        )
        if missing:
            raise RuntimeError(f"not installed: {'; '.join(missing)}; run `make setup` first (nothing was stopped)")

    def stop(self) -> None:
        """Stop the stack, whichever model server it runs (a ``Stack`` stops only its own model server)."""
        for server in SERVERS:
            self.stack(server_config(self.config, server)).down()

    def measure_on(self, server: str) -> Summary:
        stack = self.stack(server_config(self.config, server))
        started = stack.up(progress=lambda line: self.progress(f"{server}: {line}"))
        try:
            return self.measure(started, self.out / server)
        finally:
            stopped = stack.down()
            self.progress(f"{server}: stopped {', '.join(stopped)}")
