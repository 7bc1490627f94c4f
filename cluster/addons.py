"""The add-ons of the local cluster that no registry can give it: metrics-server (the HPA of dev and local) and
KEDA's operator and metrics API server (the ScaledObject of prod), built from the Go module proxy into local
images, `localhost/iotpipe-cluster/<name>:<version>`, and imported into the node. Their manifests are upstream's
own kustomizations from the same Go modules, applied by the `cluster_addons` role (see `describe`).

    python -m cluster.addons build [NAME...]     build what is missing (cached under .cache/cluster)
    python -m cluster.addons install [NAME...]   build, then import into the running node the images it lacks
    python -m cluster.addons describe            JSON: each add-on's Go module, manifest folder and image mapping
(NAME: metrics-server, keda; all without one.)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.build import Builder, run_logged, run_missing
from cluster.config import KEDA_VERSION, METRICS_SERVER_VERSION, ClusterConfig

IMAGE_PREFIX = "localhost/iotpipe-cluster"
# distroless' "nonroot", the user of KEDA's upstream images (their manifests ask runAsNonRoot, no uid);
# metrics-server's manifest sets its own (1000).
NONROOT = 65532
# No symbol table or DWARF: a third smaller image (metrics-server 100 -> about 65 MB).
STRIP = "-s -w"


@dataclass(frozen=True)
class AddonImage:
    """One image: static binaries from bin_dir at /<binary>, a /tmp, the first binary as entrypoint."""

    name: str
    version: str
    binaries: tuple[str, ...]
    upstream: str  # the image name in upstream's manifest, which the local image replaces

    @property
    def reference(self) -> str:
        return f"{IMAGE_PREFIX}/{self.name}:{self.version}"


@dataclass(frozen=True)
class Addon:
    name: str
    module: str  # module@version on the Go module proxy
    manifests: str  # upstream's kustomization folder in that module
    images: tuple[AddonImage, ...]


METRICS_SERVER = Addon(
    name="metrics-server",
    module=f"sigs.k8s.io/metrics-server@{METRICS_SERVER_VERSION}",
    manifests="manifests/base",
    images=(
        AddonImage(
            "metrics-server",
            METRICS_SERVER_VERSION,
            ("metrics-server",),
            "gcr.io/k8s-staging-metrics-server/metrics-server",
        ),
    ),
)
KEDA = Addon(
    name="keda",
    module=f"github.com/kedacore/keda/v2@{KEDA_VERSION}",
    # The release manifest without the admission webhooks (upstream's "minimal"): CRDs, operator, metrics server.
    manifests="config/minimal",
    images=(
        AddonImage("keda", KEDA_VERSION, ("keda",), "ghcr.io/kedacore/keda"),
        AddonImage(
            "keda-metrics-apiserver", KEDA_VERSION, ("keda-adapter",), "ghcr.io/kedacore/keda-metrics-apiserver"
        ),
    ),
)
ADDONS = (METRICS_SERVER, KEDA)
ADDON_NAMES = tuple(addon.name for addon in ADDONS)
# KEDA's commands and the file names its manifests run them as.
KEDA_COMMANDS = {"operator": "keda", "adapter": "keda-adapter"}


def describe() -> dict[str, dict]:
    """What the inventory needs to apply each add-on: module, manifest folder, {upstream image: local image}."""
    return {
        addon.name: {
            "module": addon.module,
            "path": addon.manifests,
            "images": {image.upstream: image.reference for image in addon.images},
        }
        for addon in ADDONS
    }


def render_pinned_go_mod(name: str, go_version: str, module: str, version: str, replaces: Sequence[dict]) -> str:
    """A wrapper module that requires `module` with the version pins of its own go.mod (`go install`
    refuses a module with replace directives); local replacements (paths) are left out."""
    pins = [
        f"\t{r['Old']['Path']}{' ' + r['Old']['Version'] if r['Old'].get('Version') else ''}"
        f" => {r['New']['Path']} {r['New']['Version']}"
        for r in replaces
        if r["New"].get("Version")
    ]
    lines = [f"module iotpipe.local/{name}", "", f"go {go_version}", "", f"require {module} {version}", ""]
    if pins:
        lines += ["replace (", *pins, ")", ""]
    return "\n".join(lines)


def rootfs_tar(binaries: Sequence[Path]) -> bytes:
    """A root filesystem of static binaries: /<binary>, /tmp (1777) and an /etc/passwd naming the user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("tmp", 0o1777), ("etc", 0o755)):
            directory = tarfile.TarInfo(name)
            directory.type, directory.mode = tarfile.DIRTYPE, mode
            tar.addfile(directory)
        passwd = f"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/tmp:/sbin/nologin\n"
        entry = tarfile.TarInfo("etc/passwd")
        entry.size, entry.mode = len(passwd), 0o644
        tar.addfile(entry, io.BytesIO(passwd.encode()))
        for binary in binaries:
            info = tar.gettarinfo(str(binary), arcname=binary.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755
            with binary.open("rb") as data:
                tar.addfile(info, data)
    return buffer.getvalue()


class AddonBuilder:
    """The add-ons' binaries (cluster/build.py's Go caches and bin folder) and images (podman's default
    storage, as docker/build_images.py; saved as docker-archives next to the cluster's own images)."""

    def __init__(self, config: ClusterConfig, names: Sequence[str] = ADDON_NAMES) -> None:
        self.config = config
        self.addons = [addon for addon in ADDONS if addon.name in names]
        self.builder = Builder(config)
        self.log = config.root / "logs" / "addons.log"
        self.builder.log = self.log

    def steps(self) -> list[tuple[str, Callable[[], bool], Callable[[], None]]]:
        binaries: list[tuple[str, Callable[[], bool], Callable[[], None]]] = [
            ("metrics-server", lambda: self.config.binary("metrics-server").exists(), self.build_metrics_server),
            ("keda", lambda: all(self.config.binary(f).exists() for f in KEDA_COMMANDS.values()), self.build_keda),
        ]
        binaries = [step for step in binaries if step[0] in {addon.name for addon in self.addons}]
        images = [
            (
                f"image {image.reference}",
                lambda image=image: self.builder.image_tar(image.reference).exists(),
                lambda image=image: self.build_image(image),
            )
            for addon in self.addons
            for image in addon.images
        ]
        return binaries + images

    def build(self) -> dict[str, float]:
        """Build what is missing; returns the seconds each step took."""
        self.config.bin_dir.mkdir(parents=True, exist_ok=True)
        self.config.images_dir.mkdir(parents=True, exist_ok=True)
        return run_missing(self.steps(), self.log)

    def build_metrics_server(self) -> None:
        module, version = METRICS_SERVER.module.split("@")
        package = f"{module}/cmd/metrics-server@{version}"
        self.builder.go(
            [
                "install",
                "-trimpath",
                "-ldflags",
                f"{STRIP} -X k8s.io/client-go/pkg/version.gitVersion={version}",
                package,
            ],
            extra_env={"GOBIN": str(self.config.bin_dir), "GOFLAGS": ""},
        )

    def build_keda(self) -> None:
        module, version = KEDA.module.split("@")
        directory = self.config.src_dir / "keda"
        directory.mkdir(parents=True, exist_ok=True)
        info = json.loads(self.builder.go_output(["mod", "download", "-json", KEDA.module]))
        upstream = json.loads(self.builder.go_output(["mod", "edit", "-json", info["GoMod"]]))
        go_mod = render_pinned_go_mod("keda", upstream["Go"], module, version, upstream.get("Replace") or [])
        (directory / "go.mod").write_text(go_mod)
        ldflags = f"{STRIP} -X {module}/version.Version={version}"
        for command, binary in KEDA_COMMANDS.items():
            output = str(self.config.binary(binary))
            self.builder.go(
                ["build", "-trimpath", "-ldflags", ldflags, "-o", output, f"{module}/cmd/{command}"], directory
            )

    def build_image(self, image: AddonImage) -> None:
        rootfs = self.config.images_dir / f"{image.name}-rootfs.tar"
        rootfs.write_bytes(rootfs_tar([self.config.binary(binary) for binary in image.binaries]))
        changes = [f'ENTRYPOINT=["/{image.binaries[0]}"]', f"USER={NONROOT}:{NONROOT}"]
        run_logged(
            ["podman", "import", *(a for c in changes for a in ("--change", c)), str(rootfs), image.reference], self.log
        )
        target = self.builder.image_tar(image.reference)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        run_logged(["podman", "save", "--format", "docker-archive", "-o", str(partial), image.reference], self.log)
        partial.rename(target)
        rootfs.unlink()


def install(config: ClusterConfig, names: Sequence[str] = ADDON_NAMES) -> list[str]:
    """Build what is missing and import into the running node each add-on image it lacks; returns those."""
    from cluster.cluster import Cluster

    builder = AddonBuilder(config, names)
    builder.build()
    cluster = Cluster(config)
    present = set(cluster.ctr("images", "list", "--quiet").stdout.split())
    imported = []
    for image in (image for addon in builder.addons for image in addon.images):
        if image.reference not in present:
            cluster.import_image(builder.builder.image_tar(image.reference), quiet=True)
            imported.append(image.reference)
    return imported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.addons", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("build", "install", "describe"))
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"add-ons, of {', '.join(ADDON_NAMES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(ADDON_NAMES))
    if unknown:
        parser.error(f"unknown add-on {', '.join(unknown)}: give some of {', '.join(ADDON_NAMES)}")
    names = args.names or ADDON_NAMES
    config = ClusterConfig.from_env()
    if args.command == "describe":
        print(json.dumps(describe(), indent=2))
    elif args.command == "build":
        timings = AddonBuilder(config, names).build()
        print(f"built: {json.dumps(timings)}" if timings else "every add-on was built already")
    else:
        for reference in install(config, names):
            print(f"imported {reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
