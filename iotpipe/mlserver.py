"""MLServer's model repository API (IOTPIPE_MODEL_SERVER=mlserver): the versions it serves, and the default one.

MLServer answers requests that name no version with its default version: the newest it serves
(versions compared as text, so 56.3 over 20.3). There is no set-default: pin a version with
IOTPIPE_MODEL_VERSION, or route a share to another with IOTPIPE_CANARY_VERSION.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from iotpipe.config import Config


class RepositoryError(RuntimeError):
    """MLServer's repository API could not be read; the message says what to do."""


@dataclass(frozen=True)
class ServedVersion:
    name: str
    version: str
    is_default: bool
    state: str  # READY, LOADING, UNAVAILABLE, ... as MLServer reports it
    reason: str  # why a version is not READY, as MLServer reports it


def served_versions(config: Config) -> list[ServedVersion]:
    """Every version MLServer knows, sorted by name and version; the default one of each model marked."""
    index = _request(config, "POST", "/v2/repository/index", json={})
    defaults = {name: _default_version(config, name) for name in {entry["name"] for entry in index}}
    versions = [
        ServedVersion(
            name=entry["name"],
            version=entry.get("version") or "",
            is_default=(entry.get("version") or "") == defaults[entry["name"]],
            state=entry["state"],
            reason=entry.get("reason", ""),
        )
        for entry in index
    ]
    return sorted(versions, key=lambda v: (v.name, v.version))


def _default_version(config: Config, name: str) -> str:
    """The version of the model metadata that MLServer gives for ``name`` alone (each runtime lists its own)."""
    versions = _request(config, "GET", f"/v2/models/{name}").get("versions") or [""]
    return versions[0]


def _request(config: Config, method: str, path: str, **kwargs):
    url = f"{config.inference_url}{path}"
    try:
        response = requests.request(method, url, timeout=10, **kwargs)
    except requests.RequestException:
        raise RepositoryError(
            f"MLServer at {config.inference_url} is not answering; is the stack up (`iotpipe status`)?"
        ) from None
    if not response.ok:
        raise RepositoryError(f"{method} {url} failed with {response.status_code}: {response.text[:300]}")
    return response.json()
