"""The bridge between Kafka and a model server, and its inference clients."""

from bridges.bridge import Bridge
from bridges.clients import InferenceClient, OpenInferenceClient, TorchServeClient, client_for

__all__ = ["Bridge", "InferenceClient", "OpenInferenceClient", "TorchServeClient", "client_for"]
