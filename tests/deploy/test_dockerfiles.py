"""docker/: hadolint is clean, every image (a target of docker/app/Dockerfile, docker/torchserve/Dockerfile, and the
local stand-ins docker/kafka and docker/pouchdb-server) is multi-stage on a pinned public base that a build argument
can replace, runs as a non-root user with a HEALTHCHECK of its own, the application images need none of the packages
they leave out, and ansible/ builds each image from its file and target."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ANSIBLE, ROOT, VENV_BIN, pod_specs, tool

DOCKER = ROOT / "docker"
APP = DOCKER / "app" / "Dockerfile"
# Each image: its Dockerfile and build target (None: the file's last stage), as `docker build` gets them.
IMAGES = {
    "torchserve": (DOCKER / "torchserve" / "Dockerfile", None),
    "bridge": (APP, "bridge"),
    "consumer": (APP, "consumer"),
    "producer": (APP, "producer"),
}
# Images that stand in for an upstream image where that cannot be pulled (the local overlay): Kafka from its Maven
# Central jars for apache/kafka, PouchDB Server for couchdb. Each runs as the user of the image it replaces.
SUBSTITUTES = {
    "kafka": (DOCKER / "kafka" / "Dockerfile", None),
    "pouchdb-server": (DOCKER / "pouchdb-server" / "Dockerfile", None),
}
ALL_IMAGES = IMAGES | SUBSTITUTES
# Images of an alternative to one of the above, not built by `make images`; Ansible builds it where an inventory
# deploys it: MLServer for TorchServe (k8s/components/mlserver, k8s/overlays/local-mlserver).
ALTERNATIVES = {"mlserver": (DOCKER / "mlserver" / "Dockerfile", None)}
DOCKERFILES = sorted(DOCKER.glob("*/Dockerfile"))
# The packages of pyproject.toml that the application images leave out (the build stage of docker/app/Dockerfile).
LEFT_OUT = ["torch", "torchvision", "torchserve", "torch-model-archiver", "matplotlib"]
# Each application image (a target of docker/app/Dockerfile): the package of its service and the `iotpipe`
# command of its ENTRYPOINT.
APPLICATIONS = {
    "bridge": ("bridges", "bridge"),
    "consumer": ("consumer", "consumer"),
    "producer": ("producer", "produce"),
}
# The build contexts besides the repository root that an image copies from (`docker build --build-context`).
BUILD_CONTEXTS = {"producer": {"images"}, "mlserver": {"models"}}
# The user of every image, which the manifests' securityContext (runAsUser, runAsGroup) repeats.
USER = "10001:10001"
USERS = {"kafka": "1000:1000", "pouchdb-server": "5984:5984"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, instructions in upper case."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = (line.strip() for line in text.splitlines())
    steps = (line.split(maxsplit=1) for line in lines if line and not line.startswith("#"))
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in steps]


@dataclasses.dataclass
class Stage:
    """One FROM of a Dockerfile: its base (an image or an earlier stage), its name and its instructions."""

    base: str
    name: str | None
    steps: list[tuple[str, str]]

    def copied_from(self) -> list[str]:
        """The --from= of its COPY instructions: stages, images or build contexts."""
        return [
            source
            for instruction, arguments in self.steps
            if instruction == "COPY"
            for source in re.findall(r"--from=(\S+)", arguments)
        ]


def global_arguments(dockerfile: Path) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: what `docker build` uses without --build-arg."""
    found = {}
    for instruction, arguments in instructions(dockerfile):
        if instruction == "FROM":
            break
        if instruction == "ARG":
            name, _, default = arguments.partition("=")
            found[name.strip()] = default.strip().strip('"')
    return found


def stages(dockerfile: Path) -> list[Stage]:
    """The stages of a Dockerfile, each FROM's ${ARG} replaced by that build argument's default."""
    defaults = global_arguments(dockerfile)
    found = []
    for instruction, arguments in instructions(dockerfile):
        if instruction == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--")]  # --platform=...
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            base = re.sub(r"\$\{?(\w+)\}?", lambda match: defaults[match.group(1)], words[0])
            found.append(Stage(base, name, []))
        elif found:
            found[-1].steps.append((instruction, arguments))
    return found


@dataclasses.dataclass
class Image:
    """What `docker build --target` builds: the target's line of stages down to its base image, and every
    stage it needs (that line and the stages it copies from), in the order of the file."""

    target: Stage
    line: list[Stage]  # the base image's stage first, the target last
    needed: list[Stage]
    bases: list[str]  # the images it is built on
    contexts: set[str]  # the --from= that are neither a stage nor an image: build contexts

    def setting(self, instruction: str) -> str | None:
        """The arguments of the last such instruction along the line (USER, ENTRYPOINT... are inherited)."""
        values = [arguments for stage in self.line for name, arguments in stage.steps if name == instruction]
        return values[-1] if values else None


def image(service: str) -> Image:
    dockerfile, target = (ALL_IMAGES | ALTERNATIVES)[service]
    all_stages = stages(dockerfile)
    named = {stage.name: stage for stage in all_stages if stage.name}
    named |= {str(index): stage for index, stage in enumerate(all_stages)}
    top = named[target] if target else all_stages[-1]
    line = [top]
    while line[0].base in named:
        line.insert(0, named[line[0].base])
    needed, pending, outside = [], [top], set()
    while pending:
        stage = pending.pop()
        if any(stage is seen for seen in needed):
            continue
        needed.append(stage)
        for reference in [stage.base, *stage.copied_from()]:
            if reference in named:
                pending.append(named[reference])
            elif reference != stage.base:
                outside.add(reference)
    needed.sort(key=lambda stage: next(i for i, s in enumerate(all_stages) if s is stage))
    bases = [stage.base for stage in needed if stage.base not in named]
    # A --from= with a tag or registry path is an image; a bare name is a build context.
    contexts = {reference for reference in outside if not re.search(r"[:/@]", reference)}
    return Image(top, line, needed, bases, contexts)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_hadolint_finds_nothing(dockerfile):
    result = subprocess.run(
        [
            str(tool(VENV_BIN / "hadolint")),
            *("--config", str(DOCKER / "hadolint.yaml"), "--no-color"),
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dockerfile_builds_images_and_the_app_dockerfile_has_one_target_per_application():
    assert set(DOCKERFILES) == {dockerfile for dockerfile, _ in (ALL_IMAGES | ALTERNATIVES).values()}
    app = stages(APP)
    built_on = {stage.base for stage in app} | {source for stage in app for source in stage.copied_from()}
    targets = [stage.name for stage in app if stage.name not in built_on]
    assert sorted(targets) == sorted(APPLICATIONS), f"stages that no other stage builds on: {targets}"
    shared = [stage.name for stage in app if stage.name not in targets]
    for service in APPLICATIONS:
        assert [stage.name for stage in image(service).needed] == [*shared, service]


@pytest.mark.parametrize("service", ALL_IMAGES)
def test_every_image_is_multi_stage_on_a_pinned_base_and_runs_as_a_non_root_user_with_a_healthcheck(service):
    built = image(service)
    assert len(built.needed) >= 2, f"{service}: one stage"
    for base in built.bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", base) and not base.endswith(":latest"), f"{service}: {base}"
    user = USERS.get(service, USER)
    assert built.setting("USER") == user, f"{service}: runs as {built.setting('USER')}"
    # Its own HEALTHCHECK, ENTRYPOINT and CMD: not inherited from a shared stage (ENTRYPOINT would reset CMD).
    own = {instruction for instruction, _ in built.target.steps}
    assert {"HEALTHCHECK", "ENTRYPOINT"} <= own, f"{service}: the target sets only {sorted(own)}"
    assert "CMD" in own or service == "torchserve", f"{service}: no CMD"


def test_every_image_the_manifests_run_is_built_here(rendered):
    own = {
        container["image"].split(":")[0].removeprefix("localhost/").removeprefix("iotpipe/")
        for spec in pod_specs(rendered["prod"]).values()
        for container in [*spec.get("initContainers", []), *spec["containers"]]
        if container["image"].removeprefix("localhost/").startswith("iotpipe/")
    }
    assert own == set(IMAGES)


@pytest.mark.parametrize("service", ALL_IMAGES | ALTERNATIVES)
def test_only_the_pictures_and_the_checkpoints_are_build_contexts_besides_the_repository(service):
    assert image(service).contexts == BUILD_CONTEXTS.get(service, set())
    dockerfile = (ALL_IMAGES | ALTERNATIVES)[service][0]
    assert not any(stage.name in BUILD_CONTEXTS.get(service, set()) for stage in stages(dockerfile))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_base_image_is_a_build_argument_with_a_public_default(dockerfile):
    """The same file builds on a developer's machine (public bases) and here (bases made from Debian packages)."""
    froms = [arguments.split()[0] for instruction, arguments in instructions(dockerfile) if instruction == "FROM"]
    named = {stage.name for stage in stages(dockerfile) if stage.name}
    images = [base for base in froms if base not in named]
    assert images and all(re.fullmatch(r"\$\{\w+_IMAGE\}", base) for base in images), images
    defaults = global_arguments(dockerfile)
    assert all(not default.startswith("localhost/") for default in defaults.values()), defaults


def test_ansible_builds_each_image_from_its_dockerfile_and_target():
    defaults = yaml.safe_load((ANSIBLE / "roles" / "iotpipe_images" / "defaults" / "main.yml").read_text())
    builds = defaults["iotpipe_images_builds"]
    assert sorted(defaults["iotpipe_images_services"]) == sorted(IMAGES)
    files = {service: (ROOT / build["dockerfile"], build.get("target")) for service, build in builds.items()}
    assert files == ALL_IMAGES | ALTERNATIVES
    tasks = (ANSIBLE / "roles" / "iotpipe_images" / "tasks" / "main.yml").read_text()
    for context in {context for service in files for context in BUILD_CONTEXTS.get(service, ())}:
        assert f"--build-context {context}=" in tasks


def run_without_left_out_packages(program: str, image_name: str) -> subprocess.CompletedProcess:
    """Run ``program`` in a Python where the packages the application images leave out do not import."""
    blocked = {name.replace("-", "_") for name in LEFT_OUT} | {"ts", "model_archiver"}
    preamble = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {sorted(blocked)!r}:
            raise ModuleNotFoundError(f"{{name}} is not in the {image_name} image")
sys.meta_path.insert(0, Blocked())
"""
    return subprocess.run(
        [sys.executable, "-c", preamble + program], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.mark.parametrize("service", APPLICATIONS)
def test_application_images_need_none_of_the_packages_they_leave_out(service):
    package, command = APPLICATIONS[service]
    built = image(service)
    assert ["iotpipe", command] == json.loads(built.setting("ENTRYPOINT"))
    steps = [arguments for stage in built.needed for _, arguments in stage.steps]
    assert any(f"--without {' '.join(LEFT_OUT)}" in arguments for arguments in steps)
    program = f"""
import {package}
from app.commands import build_parser
build_parser().parse_args([{command!r}, "--help"])
"""
    result = run_without_left_out_packages(program, service)
    assert result.returncode == 0, f"the {service} image could not start:\n{result.stderr[-3000:]}"
    assert "usage:" in result.stdout


def test_the_key_renewer_of_the_torchserve_pod_runs_in_the_application_image():
    program = """
import runpy
sys.argv = ["renew_keys", "--help"]
runpy.run_module("stack.renew_keys", run_name="__main__")
"""
    result = run_without_left_out_packages(program, "bridge")
    assert result.returncode == 0, f"the key renewer could not start:\n{result.stderr[-3000:]}"
    assert "--check" in result.stdout


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


def test_an_image_venv_gets_the_pinned_versions_and_the_torch_index_when_given(tmp_path, monkeypatch):
    sys.path.insert(0, str(DOCKER))
    try:
        import pyproject_requirements
    finally:
        sys.path.remove(str(DOCKER))
    created, commands = [], []
    monkeypatch.setattr(pyproject_requirements.venv, "create", lambda folder, with_pip: created.append(folder))
    monkeypatch.setattr(pyproject_requirements.subprocess, "run", lambda command, check: commands.append(command))
    monkeypatch.setenv("TORCH_INDEX_URL", "http://wheels.invalid/cpu")
    pyproject_requirements.main([str(ROOT / "pyproject.toml"), "--venv", str(tmp_path / "venv"), "--only", "torch"])
    monkeypatch.delenv("TORCH_INDEX_URL")
    pyproject_requirements.main([str(ROOT / "pyproject.toml"), "--venv", str(tmp_path / "venv"), "--only", "numpy"])
    assert created == [tmp_path / "venv"] * 2
    pip = str(tmp_path / "venv" / "bin" / "pip")
    torch, numpy = pyproject_requirements.requirements(ROOT / "pyproject.toml", only=["torch", "numpy"])
    assert commands == [
        [pip, "install", "--disable-pip-version-check", "--extra-index-url", "http://wheels.invalid/cpu", torch],
        [pip, "install", "--disable-pip-version-check", numpy],
    ]


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
