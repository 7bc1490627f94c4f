"""TorchServe helpers: its API keys (token authorization stays on) and its management API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import requests

from iotpipe.config import Config


class KeyFileError(RuntimeError):
    pass


def api_key(key_file: Path, api: str) -> str:
    """The current key of ``api`` ("inference" or "management") from TorchServe's key_file.json."""
    try:
        return json.loads(key_file.read_text())[api]["key"]
    except FileNotFoundError:
        raise KeyFileError(
            f"TorchServe key file {key_file} does not exist; start the stack (`iotpipe up`) "
            "or set IOTPIPE_TORCHSERVE_KEY_FILE"
        ) from None
    except (KeyError, ValueError) as error:
        raise KeyFileError(f"TorchServe key file {key_file} has no {api} key ({error!r})") from None


def bearer(key_file: Path, api: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key(key_file, api)}"}


class ManagementError(RuntimeError):
    """The management API refused or could not be reached; the message says what to do."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    is_default: bool
    workers: int
    batch_size: int
    max_batch_delay: int
    archive: str


class ManagementClient:
    """TorchServe's management API with token authorization (the key from key_file.json)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = config.management_url
        self.session = requests.Session()

    def versions(self, name: str) -> list[ModelVersion]:
        default = self._request("GET", f"/models/{name}").json()[0]["modelVersion"]
        return [
            ModelVersion(
                name=name,
                version=entry["modelVersion"],
                is_default=entry["modelVersion"] == default,
                workers=len(entry.get("workers", [])),
                batch_size=entry.get("batchSize", 1),
                max_batch_delay=entry.get("maxBatchDelay", 0),
                archive=entry.get("modelUrl", ""),
            )
            for entry in self._request("GET", f"/models/{name}/all").json()
        ]

    def models(self) -> list[str]:
        return [entry["modelName"] for entry in self._request("GET", "/models").json().get("models", [])]

    def register(self, archive: str) -> None:
        params = {
            "url": archive,
            "batch_size": self.config.batch_size,
            "max_batch_delay": self.config.max_batch_delay,
            "initial_workers": self.config.torchserve_workers,
            "synchronous": "true",
        }
        self._request("POST", "/models", params=params, timeout=300)

    def set_default(self, name: str, version: str) -> None:
        self._request("PUT", f"/models/{name}/{version}/set-default")

    def scale(self, name: str, version: str, workers: int) -> None:
        params = {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
        self._request("PUT", f"/models/{name}/{version}", params=params, timeout=300)

    def unregister(self, name: str, version: str) -> None:
        versions = self.versions(name)
        if len(versions) > 1 and any(v.version == version and v.is_default for v in versions):
            raise ManagementError(
                f"{name} {version} is the default version and serves the traffic that names no version; "
                f"make another version the default first (`iotpipe models set-default {name} VERSION`)"
            )
        self._request("DELETE", f"/models/{name}/{version}", timeout=120)

    def _request(self, method: str, path: str, timeout: float = 30, **kwargs) -> requests.Response:
        url = f"{self.url}{path}"
        try:
            response = self.session.request(
                method, url, headers=bearer(self.config.key_file, "management"), timeout=timeout, **kwargs
            )
        except requests.ConnectionError:
            raise ManagementError(
                f"TorchServe's management API at {self.url} is not answering; is the stack up (`iotpipe status`)?"
            ) from None
        if response.status_code == 404:
            raise ManagementError(
                f"{method} {path}: not found ({_message(response)}); `iotpipe models list` shows what is registered"
            )
        if not response.ok:
            raise ManagementError(f"{method} {path} failed with {response.status_code}: {_message(response)}")
        return response


def _message(response: requests.Response) -> str:
    try:
        return response.json().get("message", response.text)
    except ValueError:
        return response.text
