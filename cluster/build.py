"""Build what the local cluster runs: Kubernetes, etcd, CoreDNS and local-path-provisioner from the Go
module proxy, a pause binary, and two images from Debian packages. Every step is skipped when its output
exists, so a warm `make cluster` builds nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cluster.config import (
    COREDNS_VERSION,
    DEBIAN_PACKAGES,
    DEBIAN_SUITE,
    ETCD_VERSION,
    HELPER_IMAGE,
    KUBERNETES_COMMANDS,
    KUBERNETES_VERSION,
    LOCAL_PATH_PROVISIONER_VERSION,
    PAUSE_IMAGE,
    ClusterConfig,
)

PAUSE_SOURCE = Path(__file__).resolve().parent / "pause"
# The test and helper image: a Debian minbase with what local-path's helper pods (sh) and the checks
# (an HTTP server and client) need.
TOOLS_PACKAGES = ("python3", "curl", "ca-certificates")


class BuildError(RuntimeError):
    """A build step failed; the message names the step and its log."""


def run_logged(command: Sequence[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    """Run a command with its output appended to ``log``, between lines that give its start and its duration, so
    a slow build can be read off the log while it runs."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"[{time.strftime('%H:%M:%S')}] $ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
        out.write(f"[{time.strftime('%H:%M:%S')}] exit {done.returncode} after {time.monotonic() - started:.0f} s\n")
    if done.returncode != 0:
        raise BuildError(f"{command[0]} failed (exit {done.returncode}); see {log}")


def missing_debian_packages() -> list[str]:
    """Packages whose command (or file, for an absolute path) is not on this machine."""
    return sorted(
        {
            package
            for command, package in DEBIAN_PACKAGES.items()
            if not (Path(command).exists() if command.startswith("/") else shutil.which(command))
        }
    )


def install_debian_packages(log: Path) -> None:
    missing = missing_debian_packages()
    if not missing:
        return
    print(f"installing {' '.join(missing)} (Debian packages, needs root)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_logged(["apt-get", "update", "-qq"], log, env)
    run_logged(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", *missing], log, env)


Step = tuple[str, Callable[[], bool], Callable[[], None]]  # name, whether its output exists, how to make it


def run_missing(steps: Sequence[Step], log: Path) -> dict[str, float]:
    """Run each step whose output is missing; returns the seconds each took."""
    timings: dict[str, float] = {}
    for name, done, step in steps:
        if done():
            continue
        print(f"building {name} (log: {log})", flush=True)
        started = time.monotonic()
        step()
        timings[name] = round(time.monotonic() - started, 1)
        print(f"built {name} in {timings[name]} s", flush=True)
    return timings


class Builder:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.log = config.root / "logs" / "build.log"

    def build(self) -> dict[str, float]:
        """Build what is missing; returns the seconds each step took (an empty dict when all was there)."""
        install_debian_packages(self.log)
        self.config.bin_dir.mkdir(parents=True, exist_ok=True)
        self.config.images_dir.mkdir(parents=True, exist_ok=True)
        steps = (
            ("kubernetes", self.kubernetes_built, self.build_kubernetes),
            ("etcd", lambda: self.config.binary("etcd").exists(), self.build_etcd),
            ("coredns", lambda: self.config.binary("coredns").exists(), self.build_coredns),
            (
                "local-path-provisioner",
                lambda: self.config.binary("local-path-provisioner").exists(),
                self.build_local_path,
            ),
            ("pause", lambda: self.config.binary("pause").exists(), self.build_pause),
            ("pause image", lambda: self.image_tar(PAUSE_IMAGE).exists(), self.build_pause_image),
            ("tools image", lambda: self.image_tar(HELPER_IMAGE).exists(), self.build_tools_image),
        )
        return run_missing(steps, self.log)

    # Go builds ---------------------------------------------------------------------------------------
    def go(self, args: Sequence[str], cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **self.config.go_env, **(extra_env or {})}
        run_logged(["go", *args], self.log, env, cwd)

    def go_output(self, args: Sequence[str], cwd: Path | None = None) -> str:
        env = {**os.environ, **self.config.go_env}
        return subprocess.run(["go", *args], env=env, cwd=cwd, check=True, capture_output=True, text=True).stdout

    def kubernetes_built(self) -> bool:
        return all(self.config.binary(name).exists() for name in KUBERNETES_COMMANDS)

    def wrapper_module(self, name: str, module: str, version: str, replaced_version: str) -> Path:
        """A module that requires `module` and pins every module it replaces with a local path (the
        staging modules of kubernetes, the sibling modules of etcd) to their published version: what
        `go install module@version` refuses to do on its own."""
        directory = self.config.src_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        info = json.loads(self.go_output(["mod", "download", "-json", f"{module}@{version}"]))
        upstream = json.loads(self.go_output(["mod", "edit", "-json", info["GoMod"]]))
        local = sorted(
            r["Old"]["Path"]
            for r in upstream.get("Replace") or []
            if r["New"]["Path"].startswith(".") and major_fits(r["Old"]["Path"], replaced_version)
        )
        (directory / "go.mod").write_text(
            render_wrapper_go_mod(name, upstream["Go"], module, version, local, replaced_version)
        )
        return directory

    def build_kubernetes(self) -> None:
        directory = self.wrapper_module("kubernetes", "k8s.io/kubernetes", KUBERNETES_VERSION, staging_version())
        packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS]
        self.go(
            ["build", "-trimpath", "-ldflags", kubernetes_ldflags(), "-o", str(self.config.bin_dir), *packages],
            directory,
        )

    def build_etcd(self) -> None:
        directory = self.wrapper_module("etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION, ETCD_VERSION)
        self.go(["build", "-trimpath", "-o", str(self.config.binary("etcd")), "go.etcd.io/etcd/server/v3"], directory)

    def go_install(self, package: str) -> None:
        self.go(["install", "-trimpath", package], extra_env={"GOBIN": str(self.config.bin_dir), "GOFLAGS": ""})

    def build_coredns(self) -> None:
        self.go_install(f"github.com/coredns/coredns@{COREDNS_VERSION}")

    def build_local_path(self) -> None:
        self.go_install(f"github.com/rancher/local-path-provisioner@{LOCAL_PATH_PROVISIONER_VERSION}")

    def build_pause(self) -> None:
        self.go(["build", "-trimpath", "-o", str(self.config.binary("pause")), "."], PAUSE_SOURCE)

    # Images ------------------------------------------------------------------------------------------
    def image_tar(self, image: str) -> Path:
        return self.config.images_dir / (image.rsplit("/", 1)[-1].replace(":", "-") + ".tar")

    def podman(self, args: Sequence[str]) -> None:
        storage = self.config.root / "podman"
        run_logged(["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"), *args], self.log)

    def import_image(self, rootfs: Path, image: str, changes: Sequence[str]) -> None:
        """rootfs tarball -> podman image -> docker-archive that `ctr images import` reads."""
        change_args = [arg for change in changes for arg in ("--change", change)]
        self.podman(["import", *change_args, str(rootfs), image])
        target = self.image_tar(image)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self.podman(["save", "--format", "docker-archive", "-o", str(partial), image])
        partial.rename(target)

    def build_pause_image(self) -> None:
        rootfs = self.config.images_dir / "pause-rootfs.tar"
        run_logged(
            ["tar", "-C", str(self.config.bin_dir), "--owner=0", "--group=0", "-cf", str(rootfs), "pause"], self.log
        )
        self.import_image(rootfs, PAUSE_IMAGE, ['ENTRYPOINT=["/pause"]'])
        rootfs.unlink()

    def build_tools_image(self) -> None:
        rootfs = self.config.images_dir / f"{DEBIAN_SUITE}-tools-rootfs.tar"
        run_logged(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(TOOLS_PACKAGES)}", DEBIAN_SUITE, str(rootfs)],
            self.log,
        )
        self.import_image(rootfs, HELPER_IMAGE, ['CMD=["/bin/bash"]'])
        rootfs.unlink()


def major_fits(module: str, version: str) -> bool:
    """Whether `module` can carry `version`: v2 and up need the /vN suffix, v0 and v1 must not have one
    (etcd replaces its root module `go.etcd.io/etcd`, never published as v3)."""
    major = int(version.removeprefix("v").split(".")[0])
    suffix = module.rsplit("/", 1)[-1]
    has_suffix = suffix.startswith("v") and suffix[1:].isdigit()
    return suffix == f"v{major}" if major >= 2 else not has_suffix


def staging_version() -> str:
    """Kubernetes v1.X.Y publishes its staging modules (k8s.io/api, ...) as v0.X.Y."""
    return "v0." + KUBERNETES_VERSION.removeprefix("v1.")


def kubernetes_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    package = "k8s.io/component-base/version"
    stamps = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return " ".join(f"-X {package}.{key}={value}" for key, value in stamps.items())


def render_wrapper_go_mod(
    name: str, go_version: str, module: str, version: str, replaced: Sequence[str], replaced_version: str
) -> str:
    lines = [f"module iotpipe.local/{name}", "", f"go {go_version}", "", f"require {module} {version}", ""]
    if replaced:
        lines += ["replace (", *(f"\t{path} => {path} {replaced_version}" for path in replaced), ")", ""]
    return "\n".join(lines)
