"""Inference clients: one small interface, two protocols that TorchServe serves.

- ``TorchServeClient``: TorchServe's native inference API, images as multipart parts.
- ``OpenInferenceClient``: the Open Inference Protocol (KServe v2 REST), images as a base64
  ``BYTES`` tensor. Triton, MLServer and KServe speak it too, so another server is a
  configuration change away (``IOTPIPE_INFERENCE_PROTOCOL=open-inference``). TorchServe 0.12
  serves only ``/v2/models/<model>/infer`` (the default version), not ``/versions/<v>/``, so
  pinned and canary versions need the native protocol there.

Both send ``images_per_request`` images per request, several requests at once, and return one
prediction per image, in order: ``{"label", "scores", "model", "model_version"}`` or
``{"error": reason}`` for an image the model server could not decode. A missing model or version
is waited for (an outage: it may be being registered), not a reason to stop.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests
from PIL import Image

from iotpipe.config import Config
from iotpipe.processing import BatchFailed, Outage
from iotpipe.torchserve import KeyFileError, bearer, key_refused
from iotpipe.wire import ImageEvent


class InferenceClient:
    """Chunking, concurrency, sessions, token handling and failure classes; subclasses speak the protocol.

    Failures: a server that cannot be reached, refuses the key or lacks the model is an ``Outage``
    (waited out); an error answer or a timeout for a request is ``BatchFailed`` (some image in it
    may be the cause); ``check`` tells the two apart by sending one known-good image.
    """

    protocol = ""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=config.inference_concurrency)
        self._headers: dict[str, str] | None = None  # read at the first request: TorchServe may still be starting

    def predict(self, images: Sequence[ImageEvent], version: str | None = None) -> list[dict]:
        """One prediction per image, in order, from ``version`` (default: the server's default)."""
        size = self.config.images_per_request
        chunks = [images[start : start + size] for start in range(0, len(images), size)]
        answers = self._pool.map(lambda chunk: self._call(chunk, version), chunks)
        return [prediction for answer in answers for prediction in answer]

    def check(self, version: str | None = None) -> None:
        """Return if the server labels a known-good image; raise Outage if it does not."""
        try:
            [answer] = self._call([probe_image()], version)
        except BatchFailed as error:
            raise Outage(self.protocol, f"does not answer a known-good image: {error}") from None
        if "error" in answer:
            raise Outage(self.protocol, f"refuses a known-good image: {answer['error']}")

    def close(self) -> None:
        self._pool.shutdown()

    def _call(self, chunk: Sequence[ImageEvent], version: str | None) -> list[dict]:
        url, request = self.request(chunk, version)
        response = self._post(url, request)
        if key_refused(response):  # the keys were renewed or regenerated: read them again
            self._headers = self._read_key(url)
            response = self._post(url, request)
        if key_refused(response):
            raise Outage(self.protocol, f"{url} refuses the inference key of {self.config.key_file}")
        if response.status_code == 404:
            raise Outage(
                self.protocol,
                f"{url} has no such model or version ({response.text[:200]}); waiting for it to be registered "
                "(check IOTPIPE_MODEL_NAME, IOTPIPE_MODEL_VERSION, IOTPIPE_CANARY_VERSION and `iotpipe models list`)",
            )
        if not response.ok:
            raise BatchFailed(f"{self.protocol} at {url} answered {response.status_code}: {response.text[:300]}")
        try:
            predictions = self.parse(response.json())
        except (ValueError, KeyError, TypeError) as error:
            raise BatchFailed(f"{self.protocol} at {url} gave an answer we cannot read: {error!r}") from None
        if len(predictions) != len(chunk):
            raise BatchFailed(f"{self.protocol} answered {len(chunk)} images with {len(predictions)} results")
        return predictions

    def _post(self, url: str, request: dict) -> requests.Response:
        if self._headers is None:
            self._headers = self._read_key(url)
        try:
            return self._session().post(url, headers=self._headers, timeout=self.config.request_timeout_s, **request)
        except requests.ConnectionError as error:
            raise Outage(self.protocol, f"{url} cannot be reached: {error}") from None
        except requests.Timeout:  # the server took the request: it may be what the request holds
            raise BatchFailed(f"{self.protocol} at {url} gave no answer in {self.config.request_timeout_s} s") from None
        except requests.RequestException as error:
            raise Outage(self.protocol, f"{url}: {error}") from None

    def _read_key(self, url: str) -> dict[str, str]:
        try:
            return bearer(self.config.key_file, "inference")
        except KeyFileError as error:
            raise Outage(self.protocol, f"{url}: {error}") from None

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


@functools.cache
def probe_image() -> ImageEvent:
    """A plain grey 32x32 PNG: any working model server labels it."""
    encoded = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(encoded, format="PNG")
    return ImageEvent(source="iotpipe-probe", data=encoded.getvalue(), content_type="image/png", id="probe")


PROTOCOLS: dict[str, type[InferenceClient]] = {"torchserve": TorchServeClient, "open-inference": OpenInferenceClient}


def client_for(config: Config) -> InferenceClient:
    try:
        return PROTOCOLS[config.inference_protocol](config)
    except KeyError:
        raise ValueError(
            f"IOTPIPE_INFERENCE_PROTOCOL={config.inference_protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None
