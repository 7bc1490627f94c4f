"""Checkpoints and the TorchServe model archives (.mar) built from them into model-store/.

Used by `iotpipe up` (stack/), `iotpipe models`, the load test and the tests; it needs only the
shared package and the handler it archives (handlers/).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import requests
from PIL import Image

from iotpipe.config import Config
from iotpipe.torchserve import ManagementClient, bearer

HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"
CHECKPOINTS = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}
CHECKPOINT_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"
# Bump when the handler changes, so that a new archive gets a new version.
BUILD = 3
MANIFEST = "MAR-INF/MANIFEST.json"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class ArchiveError(RuntimeError):
    """A checkpoint or an archive that cannot be had or built; the message says what to do."""


def model_version(arch: str) -> str:
    """TorchServe versions are numbers: <depth>.<build>, e.g. 20.3 for resnet20, third build."""
    return f"{arch.removeprefix('resnet')}.{BUILD}"


def archive_name(config: Config, arch: str) -> str:
    return f"{config.model_name}-{model_version(arch)}.mar"


def arch_of_version(version: str) -> str:
    """The ResNet an archive version was built from: 56.1 -> resnet56."""
    arch = f"resnet{version.split('.')[0]}"
    if arch not in CHECKPOINTS:
        known = ", ".join(model_version(a) for a in CHECKPOINTS)
        raise ArchiveError(f"version {version!r} names no known model; versions are <depth>.<build>, e.g. {known}")
    return arch


def register_version(config: Config, name: str, version: str) -> None:
    """Register NAME VERSION from the model store (building its archive if needed) and warm it up."""
    archive = config.model_store / f"{name}-{version}.mar"
    if not archive.exists():
        if name != config.model_name:
            raise ArchiveError(f"{archive} does not exist; put the archive of {name} {version} in {config.model_store}")
        build_archive(config, arch_of_version(version))
    ManagementClient(config).register(archive.name)
    warm_up(config, name, version)


def warm_up(config: Config, name: str, version: str) -> None:
    """One inference on the new version, so the first real image does not pay for loading."""
    image = io.BytesIO()
    Image.new("RGB", (32, 32)).save(image, format="PNG")
    url = f"{config.inference_url}/predictions/{name}/{version}"
    response = requests.post(url, data=image.getvalue(), headers=bearer(config.key_file, "inference"), timeout=60)
    if not response.ok:
        raise ArchiveError(f"warm-up of {name} {version} failed ({response.status_code}): {response.text[:300]}")


def checkpoint_path(config: Config, arch: str) -> Path:
    """The checkpoint of ``arch`` from IOTPIPE_MODELS_DIR, or downloaded with its sha256 checked."""
    if arch not in CHECKPOINTS:
        raise ArchiveError(f"unknown model {arch!r}; choose one of {', '.join(CHECKPOINTS)}")
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
        raise ArchiveError(
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
            raise ArchiveError(f"torch-model-archiver failed for {arch}:\n{result.stderr[-2000:]}")
        config.model_store.mkdir(parents=True, exist_ok=True)
        normalize_archive(staging / f"{config.model_name}.mar", target)
    return target


def normalize_archive(source: Path, target: Path) -> None:
    """Rewrite a .mar reproducibly: sorted entries, fixed timestamps, no build date in the manifest.

    The same handler and checkpoint then give a byte-identical archive, so its sha256 names a build.
    """
    with zipfile.ZipFile(source) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    manifest = json.loads(entries[MANIFEST])
    manifest.pop("createdOn", None)
    entries[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name], compress_type=zipfile.ZIP_DEFLATED)
