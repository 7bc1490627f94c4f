"""TorchServe helpers: its API keys (token authorization stays on) and its management API.

TorchServe 0.12 writes three keys to key_file.json: "inference" and "management", which expire
after ``token_expiration_min`` and are renewed through its token API, and "API", the key of that
token API, which does not expire. A renewal rewrites the file in place and refuses the old key at
once, so clients re-read the file when a key is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from iotpipe.config import Config

# The key of TorchServe's token API in key_file.json; it never expires.
TOKEN_API_KEY = "API"
# The keys that expire and are renewed.
EXPIRING_KEYS = ("inference", "management")
# TorchServe rewrites key_file.json in place (truncate, then write): a read can catch it half written.
KEY_FILE_REWRITE_S = 1.0


class KeyFileError(RuntimeError):
    pass


def read_keys(key_file: Path) -> dict:
    """key_file.json as TorchServe last wrote it, read again while a rewrite is in progress."""
    deadline = time.monotonic() + KEY_FILE_REWRITE_S
    while True:
        try:
            return json.loads(key_file.read_text())
        except FileNotFoundError:
            raise KeyFileError(
                f"TorchServe key file {key_file} does not exist; start the stack (`iotpipe up`) "
                "or set IOTPIPE_TORCHSERVE_KEY_FILE"
            ) from None
        except ValueError as error:
            if time.monotonic() > deadline:
                raise KeyFileError(f"TorchServe key file {key_file} is not JSON ({error})") from None
            time.sleep(0.02)


def api_key(key_file: Path, api: str) -> str:
    """The current key of ``api`` ("inference", "management" or "API") from TorchServe's key_file.json."""
    try:
        return read_keys(key_file)[api]["key"]
    except (KeyError, TypeError) as error:
        raise KeyFileError(f"TorchServe key file {key_file} has no {api} key ({error!r})") from None


def bearer(key_file: Path, api: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key(key_file, api)}"}


def key_expirations(key_file: Path) -> dict[str, tuple[str, datetime]]:
    """Each expiring key and when it expires (an aware UTC time), as TorchServe wrote them."""
    keys = read_keys(key_file)
    try:
        return {api: (keys[api]["key"], datetime.fromisoformat(keys[api]["expiration time"])) for api in EXPIRING_KEYS}
    except (KeyError, TypeError, ValueError) as error:
        raise KeyFileError(f"TorchServe key file {key_file} has no expiring keys ({error!r})") from None


def key_refused(response: requests.Response) -> bool:
    """TorchServe 0.12 answers a missing, wrong or expired key with 400 InvalidKeyException."""
    return response.status_code in (400, 401) and "InvalidKeyException" in response.text


class InferenceKey:
    """TorchServe's inference key as request headers: read at the first request (TorchServe may
    still be starting), and read again after TorchServe refused it (renewed or regenerated)."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._headers: dict[str, str] | None = None

    def headers(self) -> dict[str, str]:
        """The Authorization header; KeyFileError when there is no key to read."""
        if self._headers is None:
            self._headers = bearer(self.key_file, "inference")
        return self._headers

    def refused(self, response: requests.Response) -> bool:
        """Whether TorchServe refused the key; if so, the next ``headers`` reads the file again."""
        if not key_refused(response):
            return False
        self._headers = None
        return True


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

    def renew_key(self, api: str) -> None:
        """Make TorchServe issue a new ``api`` key ("inference" or "management"); it rewrites key_file.json."""
        self._request("POST", "/token", params={"type": api}, key=TOKEN_API_KEY)

    def unregister(self, name: str, version: str) -> None:
        versions = self.versions(name)
        if len(versions) > 1 and any(v.version == version and v.is_default for v in versions):
            raise ManagementError(
                f"{name} {version} is the default version and serves the traffic that names no version; "
                f"make another version the default first (`iotpipe models set-default {name} VERSION`)"
            )
        self._request("DELETE", f"/models/{name}/{version}", timeout=120)

    def _request(
        self, method: str, path: str, timeout: float = 30, key: str = "management", **kwargs
    ) -> requests.Response:
        response = self._send(method, path, timeout, key, **kwargs)
        if key_refused(response):  # renewed or regenerated since we read it: the file has the new one
            response = self._send(method, path, timeout, key, **kwargs)
        if response.status_code == 404:
            raise ManagementError(
                f"{method} {path}: not found ({_message(response)}); `iotpipe models list` shows what is registered"
            )
        if key_refused(response):
            raise ManagementError(
                f"{method} {path}: TorchServe at {self.url} refuses the {key} key of {self.config.key_file} even "
                f"re-read ({_message(response)}); point IOTPIPE_TORCHSERVE_KEY_FILE at that TorchServe's key file, "
                "and check that the supervisor renews its keys (`iotpipe status`)"
            )
        if not response.ok:
            raise ManagementError(f"{method} {path} failed with {response.status_code}: {_message(response)}")
        return response

    def _send(self, method: str, path: str, timeout: float, key: str, **kwargs) -> requests.Response:
        headers = bearer(self.config.key_file, key)
        try:
            return self.session.request(method, f"{self.url}{path}", headers=headers, timeout=timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout):
            raise ManagementError(
                f"TorchServe's management API at {self.url} is not answering; is the stack up (`iotpipe status`)?"
            ) from None


def _message(response: requests.Response) -> str:
    try:
        return response.json().get("message", response.text)
    except ValueError:
        return response.text
