"""Build the project's container images with podman from docker/*/Dockerfile, on bases made from Debian packages.

    .venv/bin/python docker/build_images.py build [NAME...]    # bases, model archive, images (all by default)
    .venv/bin/python docker/build_images.py save [NAME...]     # .cache/images/<name>-<tag>.tar (docker-archive)
    .venv/bin/python docker/build_images.py verify [NAME...]   # start each image's process once, then remove it
    .venv/bin/python docker/build_images.py list               # names, references, sizes
    .venv/bin/python docker/build_images.py tag                # the tag of this working tree

No image registry is needed: the bases are Debian bookworm root filesystems (mmdebstrap --variant=minbase, then
podman import), and the Dockerfiles take them as build arguments. Images are named localhost/iotpipe/<name>:<tag>
with the tag from the git commit, so that nothing resolves to a public registry and a rebuild rolls out.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "images"
REPOSITORY = "localhost/iotpipe"
SUITE = "bookworm"
# What a base leaves out: documentation, manual pages and translations (licences stay).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
MODEL_ARCHIVE = ROOT / "model-store" / "cifar10-resnet-20.3.mar"
# What this machine trusts for HTTPS (a TLS-inspecting proxy's CA may be in it) and the settings that point pip and
# npm at it: bind-mounted read-only into every RUN of a build, so that downloads work, and kept out of the images.
HOST_TRUST = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/etc/npmrc", "/usr/etc/npmrc")
# Java's trust store, for Maven: only where no RUN installs Java (whose postinst writes that file).
JAVA_TRUST = "/etc/ssl/certs/java/cacerts"
# Ulimits of every RUN and container: runc cannot raise a limit past the caller's hard limit (no CAP_SYS_RESOURCE).
NOFILE_WANTED = 65536
NPROC_WANTED = 4096


@dataclasses.dataclass(frozen=True)
class Base:
    """A base image made from Debian packages: a minbase root filesystem with these packages."""

    name: str
    packages: tuple[str, ...]

    @property
    def tag(self) -> str:
        """Changes whenever what goes into the base does."""
        recipe = json.dumps([SUITE, "minbase", self.packages, DPKG_EXCLUDES])
        return f"{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"

    @property
    def reference(self) -> str:
        return f"{REPOSITORY}/base-{self.name}:{self.tag}"


BASES = {
    base.name: base
    for base in [
        # python3.11 as `python` with its venv module: what python:3.11-slim-bookworm gives the Dockerfiles.
        Base("python", ("python3.11", "python3.11-venv", "python-is-python3", "ca-certificates")),
        Base("jre", ("openjdk-17-jre-headless", "ca-certificates")),
        Base("maven", ("maven", "openjdk-17-jdk-headless", "ca-certificates")),
        Base("node", ("nodejs", "ca-certificates")),
        Base("npm", ("nodejs", "npm", "ca-certificates")),
    ]
}


@dataclasses.dataclass(frozen=True)
class Image:
    """One image: its Dockerfile and target, the local base of each base-image argument, and how to check that
    it starts (arguments after the image; --entrypoint first when the check is not the image's own process)."""

    name: str
    dockerfile: str
    target: str | None
    bases: dict[str, str]
    check: tuple[str, ...]
    contexts: tuple[str, ...] = ()  # build contexts besides the repository root: pictures or checkpoints
    serves: bool = False  # also start its service and wait until its HEALTHCHECK passes
    alternative: bool = False  # stands in for another image; built only when named (an inventory lists it to deploy it)


APP = "docker/app/Dockerfile"
IMAGES = {
    image.name: image
    for image in [
        Image("torchserve", "docker/torchserve/Dockerfile", None, {"BASE_IMAGE": "python"}, ("--help",), serves=True),
        Image("bridge", APP, "bridge", {"BASE_IMAGE": "python"}, ("--help",)),
        Image("consumer", APP, "consumer", {"BASE_IMAGE": "python"}, ("--help",)),
        Image("producer", APP, "producer", {"BASE_IMAGE": "python"}, ("--help",), contexts=("images",)),
        Image(
            "kafka",
            "docker/kafka/Dockerfile",
            None,
            {"BUILD_IMAGE": "maven", "BASE_IMAGE": "jre"},
            ("--entrypoint", "/opt/kafka/bin/kafka-topics.sh", "--version"),
            serves=True,
        ),
        Image(
            "pouchdb-server",
            "docker/pouchdb-server/Dockerfile",
            None,
            {"BUILD_IMAGE": "npm", "BASE_IMAGE": "node"},
            ("--help",),
            serves=True,
        ),
        Image(
            "mlserver",
            "docker/mlserver/Dockerfile",
            None,
            {"BASE_IMAGE": "python"},
            ("--help",),
            contexts=("models",),
            serves=True,
            alternative=True,
        ),
    ]
}


class BuildError(SystemExit):
    """A failed step, with what to do about it; exits with status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(f"build_images: {message}")


# -- pure logic (tests/deploy/test_images.py) -------------------------------------------------------------


def image_tag(commit: str, changes: bytes) -> str:
    """The tag of a working tree: its commit, with -dirty-<digest of the changes> when files differ from it, so that
    every different tree gets a different tag and a rebuild rolls out (Ansible's iotpipe_version reads it here)."""
    if not changes:
        return commit
    return f"{commit}-dirty-{hashlib.sha256(changes).hexdigest()[:8]}"


def reference(name: str, tag: str) -> str:
    return f"{REPOSITORY}/{name}:{tag}"


def archive_path(name: str, tag: str) -> Path:
    return CACHE / f"{name}-{tag}.tar"


def build_arguments(image: Image, public_bases: bool = False) -> list[str]:
    """--build-arg of each base: the local Debian-made base, or nothing to keep the Dockerfile's public default."""
    if public_bases:
        return []
    return [f"--build-arg={argument}={BASES[base].reference}" for argument, base in image.bases.items()]


def ulimits(nofile_hard: int, nproc_hard: int) -> list[str]:
    """Explicit ulimits within the caller's hard limits (runc cannot raise them here)."""
    nofile, nproc = min(NOFILE_WANTED, nofile_hard), min(NPROC_WANTED, nproc_hard)
    return [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]


def selected(names: Sequence[str]) -> list[Image]:
    unknown = [name for name in names if name not in IMAGES]
    if unknown:
        raise BuildError(f"no image {', '.join(unknown)}; the images are {', '.join(IMAGES)}")
    return [IMAGES[name] for name in names] or [image for image in IMAGES.values() if not image.alternative]


# -- commands ---------------------------------------------------------------------------------------------


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, check=False, **options)


def git(*arguments: str) -> bytes:
    result = run(["git", *arguments], capture_output=True)
    if result.returncode != 0:
        error = result.stderr.decode().strip()
        raise BuildError(f"git {' '.join(arguments)} failed: {error} (run it in the repository)")
    return result.stdout


def tree_changes() -> bytes:
    """The differences from HEAD that a build would see: the diff of tracked files and every untracked file that
    git does not ignore, with its content."""
    untracked = [ROOT / name.decode() for name in git("ls-files", "--others", "--exclude-standard", "-z").split(b"\0")]
    contents = [f"{path}\0".encode() + content(path) for path in untracked if path != ROOT]
    return git("diff", "HEAD", "--binary") + b"".join(contents)


def content(path: Path) -> bytes:
    """A file's bytes; a symbolic link's target (git records the link, not what it points to)."""
    return os.readlink(path).encode() if path.is_symlink() else path.read_bytes()


def current_tag() -> str:
    return image_tag(git("rev-parse", "--short=12", "HEAD").decode().strip(), tree_changes())


def podman_ulimits() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    unlimited = resource.RLIM_INFINITY
    return ulimits(NOFILE_WANTED if nofile == unlimited else nofile, NPROC_WANTED if nproc == unlimited else nproc)


def exists(image_reference: str) -> bool:
    return run(["podman", "image", "exists", image_reference]).returncode == 0


def trust_files(image: Image) -> list[str]:
    return [*HOST_TRUST, *([JAVA_TRUST] if "maven" in image.bases.values() else [])]


def trust_volumes(present: Sequence[str]) -> list[str]:
    """Read-only bind mounts of the host's trust files that exist, at the same paths."""
    return [f"--volume={path}:{path}:ro" for path in present]


def ensure_base(base: Base) -> None:
    """Make the base from Debian packages once; later builds find it in podman's storage."""
    if exists(base.reference):
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / f"base-{base.name}-{base.tag}.tar"
    started = time.monotonic()
    command = [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(base.packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        # Java's postinst registers its manual page with update-alternatives, which fails without the folder.
        '--setup-hook=mkdir -p "$1/usr/share/man/man1"',
        SUITE,
        str(rootfs),
    ]
    log = CACHE / f"base-{base.name}.log"
    with log.open("w") as output:
        made = run(command, stdout=output, stderr=subprocess.STDOUT)
    if made.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise BuildError(f"mmdebstrap could not make the {base.name} base ({log}):\n{tail}")
    imported = run(["podman", "import", "--change", 'CMD ["/bin/bash"]', str(rootfs), base.reference])
    rootfs.unlink(missing_ok=True)
    if imported.returncode != 0:
        raise BuildError(f"podman import of {rootfs} failed")
    print(f"base {base.reference}: made from Debian packages in {time.monotonic() - started:.0f} s", flush=True)


def ensure_model_archive() -> None:
    """The TorchServe image copies the archive: a build output, made here when missing."""
    if MODEL_ARCHIVE.exists():
        return
    iotpipe = ROOT / ".venv" / "bin" / "iotpipe"
    if run([str(iotpipe), "models", "build", "resnet20"]).returncode != 0 or not MODEL_ARCHIVE.exists():
        raise BuildError(f"could not build {MODEL_ARCHIVE}; run `{iotpipe} models build resnet20` and read its error")


# Each build context besides the repository root: the variable naming its folder, and what it holds.
CONTEXT_FOLDERS = {"images": ("IOTPIPE_DATA_DIR", "pictures"), "models": ("IOTPIPE_MODELS_DIR", "checkpoints")}


def context_arguments(image: Image) -> list[str]:
    arguments = []
    for context in image.contexts:
        variable, holds = CONTEXT_FOLDERS[context]
        folder = os.environ.get(variable)
        if not folder or not Path(folder).is_dir():
            raise BuildError(f"the {image.name} image needs its {holds}: set {variable} (make sets it from ../shared)")
        arguments.append(f"--build-context={context}={folder}")
    return arguments


def build(image: Image, tag: str, public_bases: bool) -> float:
    if not public_bases:
        for base in image.bases.values():
            ensure_base(BASES[base])
    if image.name == "torchserve":
        ensure_model_archive()
    started = time.monotonic()
    command = [
        "podman",
        "build",
        "--runtime=runc",
        *podman_ulimits(),
        "--format=docker",  # keeps HEALTHCHECK, which the OCI format drops
        "--layers",
        f"--file={image.dockerfile}",
        *([f"--target={image.target}"] if image.target else []),
        *build_arguments(image, public_bases),
        *trust_volumes([path for path in trust_files(image) if Path(path).is_file()]),
        *context_arguments(image),
        f"--tag={reference(image.name, tag)}",
        ".",
    ]
    if run(command).returncode != 0:
        raise BuildError(f"podman build of {image.name} failed (see above); rerun with `build {image.name}`")
    elapsed = time.monotonic() - started
    print(f"built {reference(image.name, tag)} in {elapsed:.0f} s, {size_mb(reference(image.name, tag)):.0f} MB")
    return elapsed


def size_mb(image_reference: str) -> float:
    result = run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image_reference], capture_output=True, text=True
    )
    return int(result.stdout.strip()) / 1e6 if result.returncode == 0 else float("nan")


def require(image: Image, tag: str) -> str:
    name = reference(image.name, tag)
    if not exists(name):
        raise BuildError(f"{name} is not built; run `make images` (or `build {image.name}`) first")
    return name


def save(image: Image, tag: str) -> Path:
    path = archive_path(image.name, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tar.partial")
    partial.unlink(missing_ok=True)
    result = run(["podman", "save", "--format=docker-archive", f"--output={partial}", require(image, tag)])
    if result.returncode != 0:
        raise BuildError(f"podman save of {image.name} failed")
    partial.rename(path)
    print(f"saved {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def container_options(container: str) -> list[str]:
    return [
        *("--runtime=runc", "--network=none", "--no-healthcheck", f"--name={container}"),
        *podman_ulimits(),
    ]


def wait_healthy(image: Image, tag: str, timeout_s: float = 240) -> float:
    """Start the image's service (no network), run its HEALTHCHECK until it passes; the seconds that took."""
    container = f"iotpipe-verify-{image.name}-service"
    started = time.monotonic()
    # --no-healthcheck only stops podman's timer (it needs systemd); `podman healthcheck run` reads the image's.
    options = [option for option in container_options(container) if option != "--no-healthcheck"]
    try:
        if run(["podman", "run", "--detach", *options, require(image, tag)], capture_output=True).returncode != 0:
            raise BuildError(f"{image.name}: podman run --detach failed")
        while time.monotonic() - started < timeout_s:
            if run(["podman", "healthcheck", "run", container], capture_output=True).returncode == 0:
                return time.monotonic() - started
            time.sleep(2)
        logs = run(["podman", "logs", "--tail=30", container], capture_output=True, text=True)
        raise BuildError(f"{image.name} not healthy after {timeout_s:.0f} s; its log ends:\n{logs.stdout}{logs.stderr}")
    finally:
        run(["podman", "rm", "--force", "--ignore", "--time=10", container], capture_output=True)


def verify(image: Image, tag: str) -> None:
    """Start the image's process once (its --help, or the check named for it) and remove the container."""
    name = reference(image.name, tag)
    container = f"iotpipe-verify-{image.name}"
    split = 2 if image.check[0] == "--entrypoint" else 0
    entrypoint, arguments = list(image.check[:split]), list(image.check[split:])
    command = [
        *("podman", "run", "--rm", *container_options(container)),
        *entrypoint,
        require(image, tag),
        *arguments,
    ]
    try:
        result = run(command, capture_output=True, text=True, timeout=300)
    finally:
        run(["podman", "rm", "--force", "--ignore", container], capture_output=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise BuildError(
            f"{name} did not start: `{' '.join(image.check)}` exited {result.returncode}:\n{output[-2000:]}"
        )
    print(f"verified {name}: {output.splitlines()[0] if output else 'exit 0'}", flush=True)
    if image.serves:
        print(f"verified {name}: healthy {wait_healthy(image, tag):.0f} s after start", flush=True)


def cmd_build(args: argparse.Namespace) -> None:
    tag = args.tag
    times = {image.name: build(image, tag, args.public_bases) for image in selected(args.names)}
    print("build times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items()))


def cmd_save(args: argparse.Namespace) -> None:
    tag = args.tag
    for image in selected(args.names):
        save(image, tag)


def cmd_verify(args: argparse.Namespace) -> None:
    tag = args.tag
    for image in selected(args.names):
        verify(image, tag)


def cmd_list(args: argparse.Namespace) -> None:
    tag = args.tag
    for image in selected(args.names):
        name = reference(image.name, tag)
        size = f"{size_mb(name):.0f} MB" if exists(name) else "not built"
        print(f"{image.name:<15} {name:<50} {size}")


def cmd_tag(args: argparse.Namespace) -> None:
    print(current_tag())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=f"images: {', '.join(IMAGES)}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for name, handler, help in [
        ("build", cmd_build, "build the images (bases and the model archive first, when missing)"),
        ("save", cmd_save, "write .cache/images/<name>-<tag>.tar (docker-archive, for `ctr images import`)"),
        ("verify", cmd_verify, "start each image's process once and remove the container"),
        ("list", cmd_list, "each image's reference and size"),
        ("tag", cmd_tag, "print the tag of this working tree"),
    ]:
        command = commands.add_parser(name, help=help, description=help)
        command.set_defaults(handler=handler)
        if name != "tag":
            command.add_argument("names", nargs="*", metavar="NAME", help="images (default: all)")
            command.add_argument("--tag", help="the images' tag (default: this working tree's, as `tag` prints)")
        if name == "build":
            command.add_argument(
                "--public-bases",
                action="store_true",
                help="keep the Dockerfiles' public base images (a machine that reaches their registry)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "tag", "") is None:
        args.tag = current_tag()
    args.handler(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
