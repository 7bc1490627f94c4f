"""Shared pieces of the deployment checks: the tools of `make deploy-setup` and the rendered overlays.

Everything here runs offline: kustomize renders k8s/, the Kubernetes API schemas come with the
kubernetes-validate package, KEDA's and prometheus-operator's schemas are vendored in schemas/
(`make deploy-schemas`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
ANSIBLE = ROOT / "ansible"
VENV_BIN = Path(sys.executable).parent
KUSTOMIZE = ROOT / ".tools" / "bin" / "kustomize"
# The Kubernetes release the manifests are validated against (and ansible/ installs with kubeadm).
KUBERNETES_VERSION = "1.34.0"
OVERLAYS = ["dev", "prod", "local"]


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs the running stack (started by the session fixture)")


def tool(path: Path) -> Path:
    """A tool of `make deploy-setup`, or a failure that says how to install it."""
    if not path.exists():
        pytest.fail(f"{path} is missing; run `make deploy-setup` (requirements-deploy.txt and kustomize into .tools/)")
    return path


def tool_environment() -> dict[str, str]:
    """The environment for the deployment tools: the venv's programs first, no colours."""
    return os.environ | {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
    }


def kustomize_build(directory: Path) -> list[dict]:
    """The objects that `kustomize build DIRECTORY` renders."""
    result = subprocess.run(
        [str(tool(KUSTOMIZE)), "build", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def kustomization_dir(name: str) -> Path:
    """k8s/base for "base", else the overlay of that name."""
    return K8S / "base" if name == "base" else K8S / "overlays" / name


def with_components(name: str, components: list[str], scratch: Path) -> list[dict]:
    """Render base or an overlay with extra components, through a kustomization written in ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)

    def relative(path: Path) -> str:  # kustomize refuses absolute paths
        return os.path.relpath(path, scratch)

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(kustomization_dir(name))],
        "components": [relative(K8S / "components" / component) for component in components],
    }
    (scratch / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize_build(scratch)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """{"base": objects, "dev": objects, "prod": objects}, rendered once per session."""
    return {name: kustomize_build(kustomization_dir(name)) for name in ["base", *OVERLAYS]}


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def configmap_name(objects: list[dict], prefix: str) -> str:
    """The generated (hash-suffixed) name of a ConfigMap."""
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    matches = [name for name in names if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", name)]
    assert len(matches) == 1, f"{prefix}: {names}"
    return matches[0]


def properties(text: str) -> dict[str, str]:
    """The key=value pairs of a Java properties file (Kafka's server.properties, TorchServe's config.properties)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    """{"Kind/name": pod spec} of every object that runs pods."""
    specs = {}
    for o in objects:
        if o["kind"] == "Pod":
            specs[f"Pod/{o['metadata']['name']}"] = o["spec"]
        elif o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            specs[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]["spec"]
    return specs


def which(program: str) -> str | None:
    return shutil.which(program, path=tool_environment()["PATH"])
