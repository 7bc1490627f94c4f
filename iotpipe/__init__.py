"""Shared code of the IoT inference pipeline: configuration, wire format and image types, the processing loop,
Kafka and CouchDB clients, and the cameras' latency files."""

from iotpipe.config import Config

__all__ = ["Config"]
