"""How a command of ``iotpipe`` is declared; the application that gathers the commands is ``app``.

The packages that bring their own commands (dashboard/, loadtest/, app.dead_letters) declare
them with ``add_command`` in their ``register(commands)``, so that every command takes ``-v`` and is
called the same way, without importing the application above them.
"""

from __future__ import annotations

import argparse


def add_command(commands, name: str, handler, help: str) -> argparse.ArgumentParser:
    """A subcommand whose handler is called as handler(config, args)."""
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(command=handler, name=name)
    sub.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return sub
