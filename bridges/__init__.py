"""Bridges between Kafka and a model server."""

from bridges.torchserve import Bridge, TorchServeClient

__all__ = ["Bridge", "TorchServeClient"]
