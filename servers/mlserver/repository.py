"""``python -m servers.mlserver.repository FOLDER MODELS_DIR``: MLServer's settings and model repository for an image.

The same files as the embedded stack writes (stack/mlserver), for the image's paths: listening on
every interface with the ports MLServer documents (8080 HTTP, 8081 gRPC, 8082 metrics).
"""

from __future__ import annotations

import sys
from pathlib import Path

from iotpipe.config import Config
from stack.mlserver import write_repository


def main(argv: list[str]) -> int:
    folder, models_dir = map(Path, argv)
    config = Config(
        models_dir=models_dir,
        inference_url="http://0.0.0.0:8080",
        grpc_inference_port=8081,
        metrics_url="http://0.0.0.0:8082",
        model_server="mlserver",
        inference_protocol="open-inference",
    )
    write_repository(config, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
