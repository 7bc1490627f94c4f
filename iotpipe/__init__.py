"""Shared code of the IoT inference pipeline: configuration, wire format, Kafka and CouchDB helpers."""

from iotpipe.config import Config

__all__ = ["Config"]
