"""Inference clients: one small interface, two protocols that TorchServe serves.

- ``TorchServeClient``: TorchServe's native inference API, images as multipart parts.
- ``OpenInferenceClient``: the Open Inference Protocol (KServe v2 REST), images as a base64
  ``BYTES`` tensor. Triton, MLServer and KServe speak it too, so another server is a
  configuration change away (``IOTPIPE_INFERENCE_PROTOCOL=open-inference``). TorchServe 0.12
  serves only ``/v2/models/<model>/infer`` (the default version), not ``/versions/<v>/``, so
  pinned and canary versions need the native protocol there.

Both send ``images_per_request`` images per request, several requests at once, and return one
prediction per image, in order: ``{"label", "scores", "model", "model_version"}`` or
``{"error": reason}`` for an image the model server could not decode.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from iotpipe.config import Config
from iotpipe.torchserve import bearer
from iotpipe.wire import ImageEvent


class InferenceUnavailable(RuntimeError):
    """The model server did not answer a request; the batch is retried, not dropped."""


class InferenceMisconfigured(RuntimeError):
    """The model server has no such model, version or route: retrying cannot help."""


class InferenceClient:
    """Chunking, concurrency, sessions and token handling; subclasses speak the protocol."""

    protocol = ""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=config.inference_concurrency)
        self._headers = bearer(config.key_file, "inference")

    def predict(self, images: Sequence[ImageEvent], version: str | None = None) -> list[dict]:
        """One prediction per image, in order, from ``version`` (default: the server's default)."""
        size = self.config.images_per_request
        chunks = [images[start : start + size] for start in range(0, len(images), size)]
        answers = self._pool.map(lambda chunk: self._call(chunk, version), chunks)
        return [prediction for answer in answers for prediction in answer]

    def close(self) -> None:
        self._pool.shutdown()

    def _call(self, chunk: Sequence[ImageEvent], version: str | None) -> list[dict]:
        url, request = self.request(chunk, version)
        for attempt in range(2):
            try:
                response = self._session().post(
                    url, headers=self._headers, timeout=self.config.request_timeout_s, **request
                )
            except requests.RequestException as error:
                raise InferenceUnavailable(f"{self.protocol} at {url} did not answer: {error}") from None
            if attempt == 0 and "Token Authorization failed" in response.text:
                self._headers = bearer(self.config.key_file, "inference")  # keys were regenerated
                continue
            break
        if response.status_code == 404:
            raise InferenceMisconfigured(
                f"{self.protocol} at {url} has no such model or version ({response.text[:200]}); check "
                "IOTPIPE_MODEL_NAME, IOTPIPE_MODEL_VERSION, IOTPIPE_CANARY_VERSION and `iotpipe models list`"
            )
        if not response.ok:
            raise InferenceUnavailable(
                f"{self.protocol} at {url} answered {response.status_code}: {response.text[:300]}"
            )
        try:
            predictions = self.parse(response.json())
        except (ValueError, KeyError, TypeError) as error:
            raise InferenceUnavailable(f"{self.protocol} at {url} gave an answer we cannot read: {error!r}") from None
        if len(predictions) != len(chunk):
            raise InferenceUnavailable(f"{self.protocol} answered {len(chunk)} images with {len(predictions)} results")
        return predictions

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def request(self, chunk: Sequence[ImageEvent], version: str | None) -> tuple[str, dict]:
        """The URL and the ``requests`` keyword arguments of one request."""
        raise NotImplementedError

    def parse(self, answer) -> list[dict]:
        """The predictions in a decoded JSON answer."""
        raise NotImplementedError


class TorchServeClient(InferenceClient):
    protocol = "TorchServe"

    def request(self, chunk: Sequence[ImageEvent], version: str | None) -> tuple[str, dict]:
        path = f"/predictions/{self.config.model_name}" + (f"/{version}" if version else "")
        files = [(f"image{i}", (event.id, event.data, event.content_type)) for i, event in enumerate(chunk)]
        return self.config.inference_url + path, {"files": files}

    def parse(self, answer) -> list[dict]:
        if not isinstance(answer, list):
            raise TypeError(f"expected a list, got {answer!r:.200}")
        return answer


class OpenInferenceClient(InferenceClient):
    protocol = "Open Inference Protocol"

    def request(self, chunk: Sequence[ImageEvent], version: str | None) -> tuple[str, dict]:
        path = f"/v2/models/{self.config.model_name}" + (f"/versions/{version}" if version else "") + "/infer"
        images = [base64.b64encode(event.data).decode() for event in chunk]
        body = {
            "id": uuid.uuid4().hex,
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": images}],
        }
        return self.config.inference_url + path, {"json": body}

    def parse(self, answer) -> list[dict]:
        outputs = {output["name"]: output["data"] for output in answer["outputs"]}
        predictions = []
        for label, scores, error in zip(outputs["label"], outputs["scores"], outputs["error"], strict=True):
            if error:
                predictions.append({"error": error})
            else:
                predictions.append(
                    {
                        "label": label,
                        "scores": json.loads(scores),
                        "model": answer["model_name"],
                        "model_version": answer["model_version"],
                    }
                )
        return predictions


PROTOCOLS: dict[str, type[InferenceClient]] = {"torchserve": TorchServeClient, "open-inference": OpenInferenceClient}


def client_for(config: Config) -> InferenceClient:
    try:
        return PROTOCOLS[config.inference_protocol](config)
    except KeyError:
        raise ValueError(
            f"IOTPIPE_INFERENCE_PROTOCOL={config.inference_protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None
