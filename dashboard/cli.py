"""The ``iotpipe dashboard`` command."""

from __future__ import annotations


def register(commands) -> None:
    """Add the dashboard subcommand to the ``iotpipe`` parser."""
