"""The bridge and the consumer as processes of the embedded stack, and how any child gets its configuration.

A child is handed the stack's configuration as its complete IOTPIPE_* environment
(``Config.environ()``; Service drops the inherited IOTPIPE_* variables), the same way a container
is configured in k8s/: a stack built with a modified Config starts its children with that Config,
and nothing in the shell that ran `iotpipe up` can differ from it.
"""

from __future__ import annotations

import sys

from iotpipe.config import Config
from stack.component import Component
from stack.process import Service

# How the stack starts the application's commands (app/__main__.py).
APPLICATION = [sys.executable, "-m", "app"]


def application_process(config: Config, command: str, name: str) -> Service:
    """``iotpipe COMMAND`` in the background with ``config``, healthy once it has written its ready file."""
    state = config.state_dir.resolve()
    ready = state / "pids" / f"{name}.ready"
    return Service(
        name=name,
        command=[*APPLICATION, command, "--ready-file", str(ready)],
        healthy=ready.exists,
        state_dir=state,
        env=config.environ(),
        ready_file=ready,
    )


class PipelineService(Component):
    """The bridge or the consumer: healthy once it has joined its consumer group."""

    def __init__(self, config: Config, name: str) -> None:
        super().__init__(config)
        self.name = name
        self.process = application_process(config, name, name)

    def healthy(self) -> bool:
        return self.process.healthy()
