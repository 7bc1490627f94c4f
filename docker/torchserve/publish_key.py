#!/usr/bin/env python3
"""Copy TorchServe's inference key into a Kubernetes Secret, so that bridges in other pods can use it.

TorchServe 0.12 makes up new random keys at every start and writes them to key_file.json in its working
directory. This sidecar watches that file and writes {"inference": ...} (never the management key) as
key_file.json of the Secret named by KEY_SECRET_NAME, in its own namespace, with the pod's service
account (allowed to get and patch that one Secret). The bridges mount the Secret and re-read the file
when TorchServe refuses a key.
"""

import base64
import json
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KEY_FILE = Path(os.environ.get("TS_KEY_FILE", "/home/model-server/run/key_file.json"))
INTERVAL_S = float(os.environ.get("PUBLISH_INTERVAL_S", "5"))


def inference_key_file() -> str | None:
    """The key file as bridges should see it, or None while TorchServe has not written it."""
    try:
        keys = json.loads(KEY_FILE.read_text())
        return json.dumps({"inference": keys["inference"]}, sort_keys=True)
    except (OSError, ValueError, KeyError):
        return None


def publish(secret: str, content: str) -> None:
    namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/secrets/{secret}"
    body = json.dumps({"data": {"key_file.json": base64.b64encode(content.encode()).decode()}}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="PATCH",
        headers={
            "Authorization": f"Bearer {(SERVICE_ACCOUNT / 'token').read_text().strip()}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    with urllib.request.urlopen(request, context=context, timeout=10):
        pass


def main() -> int:
    secret = os.environ["KEY_SECRET_NAME"]
    published = None
    while True:
        content = inference_key_file()
        if content is not None and content != published:
            try:
                publish(secret, content)
                published = content
                print(f"publish-torchserve-key: wrote the inference key to Secret {secret}", flush=True)
            except OSError as error:  # HTTPError is an OSError too
                print(f"publish-torchserve-key: could not patch Secret {secret}: {error}", file=sys.stderr)
        time.sleep(INTERVAL_S)


if __name__ == "__main__":
    sys.exit(main())
