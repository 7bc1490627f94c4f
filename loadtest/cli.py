"""The load-test commands of ``iotpipe`` (loadtest, analyze, bench)."""

from __future__ import annotations


def register(commands) -> None:
    """Add the load-test subcommands to the ``iotpipe`` parser."""
