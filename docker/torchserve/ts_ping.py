#!/usr/bin/env python3
"""Exit 0 when TorchServe answers /ping "Healthy" to the inference key of its key_file.json.

TorchServe 0.12 refuses /ping without the key, and writes its keys at start to key_file.json in its
working directory; this is the container's HEALTHCHECK and the Kubernetes startup and readiness probe.
"""

import json
import os
import sys
import urllib.error
import urllib.request

KEY_FILE = os.environ.get("TS_KEY_FILE", "/home/model-server/run/key_file.json")
URL = os.environ.get("TS_PING_URL", "http://127.0.0.1:8080/ping")


def main() -> int:
    try:
        with open(KEY_FILE) as keys:
            key = json.load(keys)["inference"]["key"]
    except (OSError, ValueError, KeyError) as error:
        print(f"ts-ping: no inference key in {KEY_FILE} yet ({error})", file=sys.stderr)
        return 1
    request = urllib.request.Request(URL, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            status = json.load(response).get("status")
    except urllib.error.HTTPError as error:
        print(f"ts-ping: {URL} answered {error.code} {error.reason}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"ts-ping: {URL} did not answer ({error})", file=sys.stderr)
        return 1
    if status != "Healthy":
        print(f"ts-ping: {URL} says {status!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
