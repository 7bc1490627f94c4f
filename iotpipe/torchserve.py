"""TorchServe's API keys: token authorization stays on, and clients read the keys it writes."""

from __future__ import annotations

import json
from pathlib import Path


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
