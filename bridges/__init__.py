"""The bridge between Kafka and a model server, and its inference clients."""

from bridges.bridge import Bridge
from bridges.clients import (
    InferenceClient,
    Labelled,
    OpenInferenceClient,
    Result,
    TorchServeClient,
    Undecodable,
    client_for,
)

__all__ = [
    "Bridge",
    "InferenceClient",
    "Labelled",
    "OpenInferenceClient",
    "Result",
    "TorchServeClient",
    "Undecodable",
    "client_for",
]
