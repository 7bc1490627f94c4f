"""Checkpoints and the TorchServe model archives (.mar) built from them into model-store/."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from iotpipe.config import Config
from stack.process import StackError

HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"
CHECKPOINTS = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}
CHECKPOINT_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"
BUILD = 1


def model_version(arch: str) -> str:
    """TorchServe versions are numbers: <depth>.<build>, e.g. 20.1 for resnet20, first build."""
    return f"{arch.removeprefix('resnet')}.{BUILD}"


def archive_name(config: Config, arch: str) -> str:
    return f"{config.model_name}-{model_version(arch)}.mar"


def checkpoint_path(config: Config, arch: str) -> Path:
    """The checkpoint of ``arch`` from IOTPIPE_MODELS_DIR, or downloaded with its sha256 checked."""
    if arch not in CHECKPOINTS:
        raise StackError(f"unknown model {arch!r}; choose one of {', '.join(CHECKPOINTS)}")
    filename = CHECKPOINTS[arch]
    local = config.models_dir / filename
    if local.is_file():
        return local
    cached = config.state_dir / "checkpoints" / filename
    if not cached.is_file():
        _download(CHECKPOINT_URL.format(filename), cached, config)
    return cached


def _download(url: str, target: Path, config: Config) -> None:
    from torch.hub import download_url_to_file

    hash_prefix = target.stem.rsplit("-", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(target), hash_prefix=hash_prefix, progress=True)
    except Exception as error:
        raise StackError(
            f"checkpoint {target.name} is not in {config.models_dir} and could not be downloaded from "
            f"{url} ({error}); set IOTPIPE_MODELS_DIR to a folder holding the CIFAR-10 ResNet checkpoints"
        ) from None


def sha256_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def build_archive(config: Config, arch: str, force: bool = False) -> Path:
    """Build model-store/<model>-<version>.mar for ``arch`` unless it exists."""
    target = config.model_store / archive_name(config, arch)
    if target.exists() and not force:
        return target
    checkpoint = checkpoint_path(config, arch)
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        package = staging / "extra" / "handlers"
        shutil.copytree(HANDLERS_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
        command = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", config.model_name,
            "--version", model_version(arch),
            "--serialized-file", str(checkpoint),
            "--handler", str(HANDLERS_DIR / "cifar10.py"),
            "--extra-files", str(staging / "extra"),
            "--export-path", str(staging),
            "--force",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"torch-model-archiver failed for {arch}:\n{result.stderr[-2000:]}")
        config.model_store.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / f"{config.model_name}.mar", target)
    return target
