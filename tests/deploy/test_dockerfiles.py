"""docker/: hadolint is clean, every image is multi-stage on a pinned base, runs as a non-root user
with a HEALTHCHECK, and the application images need none of the packages they leave out."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from tests.deploy.conftest import ROOT, VENV_BIN, pod_specs, tool

DOCKER = ROOT / "docker"
SERVICES = ["torchserve", "bridge", "consumer", "producer"]
# The packages of pyproject.toml that the application images leave out (docker/*/Dockerfile).
LEFT_OUT = ["torch", "torchvision", "torchserve", "torch-model-archiver", "matplotlib"]
# Each application image: the package of its service and the `iotpipe` command of its ENTRYPOINT.
APPLICATIONS = {
    "bridge": ("bridges", "bridge"),
    "consumer": ("consumer", "consumer"),
    "producer": ("producer", "produce"),
}


def instructions(service: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/<service>/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / service / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [tuple(line.split(maxsplit=1)) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_finds_nothing(service):
    result = subprocess.run(
        [
            str(tool(VENV_BIN / "hadolint")),
            *("--config", str(DOCKER / "hadolint.yaml"), "--no-color"),
            str(DOCKER / service / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_every_image_is_multi_stage_on_a_pinned_base_and_runs_as_a_non_root_user_with_a_healthcheck(service):
    steps = instructions(service)
    bases = [arguments.split()[0] for instruction, arguments in steps if instruction == "FROM"]
    assert len(bases) >= 2, f"{service}: one stage"
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", base) and not base.endswith(":latest"), f"{service}: {base}"
    users = [arguments for instruction, arguments in steps if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{service}: runs as {users}"
    assert any(instruction == "HEALTHCHECK" for instruction, _ in steps), f"{service}: no HEALTHCHECK"


def test_every_image_the_manifests_run_is_built_here(rendered):
    own = {
        container["image"].split(":")[0].removeprefix("iotpipe/")
        for spec in pod_specs(rendered["prod"]).values()
        for container in [*spec.get("initContainers", []), *spec["containers"]]
        if container["image"].startswith("iotpipe/")
    }
    assert own == set(SERVICES)


@pytest.mark.parametrize("service", APPLICATIONS)
def test_application_images_need_none_of_the_packages_they_leave_out(service):
    package, command = APPLICATIONS[service]
    assert ["iotpipe", command] == json.loads(dict(instructions(service))["ENTRYPOINT"])
    assert any(f"--without {' '.join(LEFT_OUT)}" in arguments for _, arguments in instructions(service))
    blocked = {name.replace("-", "_") for name in LEFT_OUT} | {"ts", "model_archiver"}
    program = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {sorted(blocked)!r}:
            raise ModuleNotFoundError(f"{{name}} is not in the {service} image")
sys.meta_path.insert(0, Blocked())
import {package}
from iotpipe.cli import build_parser
build_parser().parse_args([{command!r}, "--help"])
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, f"the {service} image could not start:\n{result.stderr[-3000:]}"
    assert "usage:" in result.stdout


def test_images_install_the_versions_that_pyproject_pins():
    sys.path.insert(0, str(DOCKER))
    try:
        from pyproject_requirements import requirements
    finally:
        sys.path.remove(str(DOCKER))
    apps = requirements(ROOT / "pyproject.toml", without=LEFT_OUT)
    torchserve = requirements(
        ROOT / "pyproject.toml", only=["torch", "torchserve", "Pillow", "numpy", "pyyaml", "psutil"]
    )
    for requirement in [*apps, *torchserve]:
        assert re.fullmatch(r"[\w.-]+==[\w.]+", requirement), requirement
    assert not [r for r in apps if r.split("==")[0].lower() in LEFT_OUT]


def load_script(name: str):
    """A helper script of the TorchServe image (docker/torchserve/<name>.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, DOCKER / "torchserve" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_key_publisher_hands_out_the_inference_key_only(tmp_path, monkeypatch):
    publish_key = load_script("publish_key")
    key_file = tmp_path / "key_file.json"
    monkeypatch.setattr(publish_key, "KEY_FILE", key_file)
    assert publish_key.inference_key_file() is None  # TorchServe has not started yet
    key_file.write_text(json.dumps({"management": {"key": "m"}, "inference": {"key": "i"}, "API": {"key": "a"}}))
    assert json.loads(publish_key.inference_key_file()) == {"inference": {"key": "i"}}


@pytest.mark.integration
def test_the_torchserve_probe_passes_with_the_key_file_of_a_running_torchserve(stack, tmp_path):
    def ts_ping(key_file) -> subprocess.CompletedProcess:
        environment = {"TS_KEY_FILE": str(key_file), "TS_PING_URL": f"{stack.inference_url}/ping", "PATH": ""}
        script = DOCKER / "torchserve" / "ts_ping.py"
        return subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=30, env=environment)

    assert ts_ping(stack.key_file).returncode == 0
    wrong = tmp_path / "key_file.json"
    wrong.write_text(json.dumps({"inference": {"key": "not-the-key"}}))
    refused = ts_ping(wrong)
    assert refused.returncode == 1 and "answered 4" in refused.stderr
