"""Inference clients: one small interface, two protocols, two model servers.

- ``TorchServeClient``: TorchServe's native inference API, images as multipart parts.
- ``OpenInferenceClient``: the Open Inference Protocol (KServe v2 REST), images as a base64
  ``BYTES`` tensor, at ``/v2/models/<model>[/versions/<v>]/infer``. MLServer
  (``IOTPIPE_MODEL_SERVER=mlserver``) serves every version there; TorchServe 0.12 serves only
  the default version there, so pinned and canary versions need its native protocol.

Both send ``images_per_request`` images per request, several requests at once, and return one
result per image, in order: a ``Labelled`` image, or ``Undecodable`` with the reason the model
server gave. A missing model or version is waited for (an outage: it may be being registered),
not a reason to stop. TorchServe's token authorization is the one key handling: its inference
key is sent to TorchServe, nothing to MLServer, which has none.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import requests
from PIL import Image

from iotpipe.config import Config
from iotpipe.processing import BatchFailed, Outage
from iotpipe.torchserve import InferenceKey, KeyFileError
from iotpipe.wire import ImageEvent

WARM_UP_GATHER_S = 5.0  # how long a warm-up probe waits for the pool's other threads to start


@dataclass(frozen=True)
class Labelled:
    label: str
    scores: dict[str, float]
    model: str
    model_version: str

    def __post_init__(self) -> None:
        """A model server's answer of the wrong shape is a failed request (TypeError), not a prediction."""
        texts = (self.label, self.model, self.model_version)
        if not all(isinstance(text, str) for text in texts) or not isinstance(self.scores, dict):
            raise TypeError(f"a prediction needs text label, model and version and a dict of scores: {self!r:.300}")


@dataclass(frozen=True)
class Undecodable:
    """The model server could not read this image; the reason is what it said."""

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason:
            raise TypeError(f"an image's error must be a non-empty text: {self.reason!r:.300}")


Result = Labelled | Undecodable


class Key(Protocol):
    """What a client sends to authorize itself, and whether the server refused it."""

    def headers(self) -> dict[str, str]: ...

    def refused(self, response: requests.Response) -> bool: ...


class NoKey:
    """A model server without authorization (MLServer, on loopback or behind the cluster's network policy)."""

    def headers(self) -> dict[str, str]:
        return {}

    def refused(self, response: requests.Response) -> bool:
        return False


def key_for(config: Config) -> Key:
    return InferenceKey(config.key_file) if config.model_server == "torchserve" else NoKey()


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
        self.key = key_for(config)

    def predict(self, images: Sequence[ImageEvent], version: str | None = None) -> list[Result]:
        """One result per image, in order, from ``version`` (default: the server's default)."""
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
        if isinstance(answer, Undecodable):
            raise Outage(self.protocol, f"refuses a known-good image: {answer.reason}")

    def warm_up(self, version: str | None = None) -> None:
        """``check`` from every thread of the pool at once: each opens its connection, and the model server
        pays its first-request costs (a worker's first forward pass) before any image waits for them."""
        threads = self.config.inference_concurrency
        together = threading.Barrier(threads)

        def probe(_: int) -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait(timeout=WARM_UP_GATHER_S)  # one probe per thread, not one thread for all
            self.check(version)

        list(self._pool.map(probe, range(threads)))

    def close(self) -> None:
        self._pool.shutdown()

    def _call(self, chunk: Sequence[ImageEvent], version: str | None) -> list[Result]:
        url, request = self.request(chunk, version)
        response = self._post(url, request)
        if self.key.refused(response):  # the keys were renewed or regenerated: read them again
            response = self._post(url, request)
        if self.key.refused(response):
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
        try:
            headers = self.key.headers()
        except KeyFileError as error:
            raise Outage(self.protocol, f"{url}: {error}") from None
        try:
            return self._session().post(url, headers=headers, timeout=self.config.request_timeout_s, **request)
        except requests.ConnectionError as error:
            raise Outage(self.protocol, f"{url} cannot be reached: {error}") from None
        except requests.Timeout:  # the server took the request: it may be what the request holds
            raise BatchFailed(f"{self.protocol} at {url} gave no answer in {self.config.request_timeout_s} s") from None
        except requests.RequestException as error:
            raise Outage(self.protocol, f"{url}: {error}") from None

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def request(self, chunk: Sequence[ImageEvent], version: str | None) -> tuple[str, dict]:
        """The URL and the ``requests`` keyword arguments of one request."""
        raise NotImplementedError

    def parse(self, answer) -> list[Result]:
        """The results in a decoded JSON answer; ValueError, KeyError or TypeError when it is not one."""
        raise NotImplementedError


class TorchServeClient(InferenceClient):
    protocol = "TorchServe"

    def request(self, chunk: Sequence[ImageEvent], version: str | None) -> tuple[str, dict]:
        path = f"/predictions/{self.config.model_name}" + (f"/{version}" if version else "")
        files = [(f"image{i}", (event.id, event.data, event.content_type)) for i, event in enumerate(chunk)]
        return self.config.inference_url + path, {"files": files}

    def parse(self, answer) -> list[Result]:
        if not isinstance(answer, list):
            raise TypeError(f"expected a list, got {answer!r:.200}")
        return [Undecodable(entry["error"]) if "error" in entry else Labelled(**entry) for entry in answer]


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

    def parse(self, answer) -> list[Result]:
        outputs = {output["name"]: output["data"] for output in answer["outputs"]}
        return [
            Undecodable(error)
            if error
            else Labelled(label, json.loads(scores), answer["model_name"], answer["model_version"])
            for label, scores, error in zip(outputs["label"], outputs["scores"], outputs["error"], strict=True)
        ]


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
