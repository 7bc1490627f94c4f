"""`make cluster-test`: the cluster path end to end on this machine, as a user would run it.

Phases: build what the local cluster lacks (`python -m cluster build`), build the images that the overlay's
inventories deploy (docker/build_images.py), then `ansible-playbook -i ansible/inventories/local-cluster
ansible/site.yml` (brings the local cluster up, imports the images into its node, deploys k8s/overlays/local and
waits for every rollout; with `--overlay local-prod`, the inventory local-cluster-prod too: prod's three SASL_SSL
brokers, its Secrets made on the spot, KEDA; with `--overlay local-mlserver`, local-cluster-mlserver: MLServer in
TorchServe's place, its image built instead of TorchServe's), then deploy.yml again (it must change nothing), run the
producer Job with 5 cameras (ansible/scale-producers.yml) while a Kafka broker pod, the bridge pod and the consumer
pod are deleted, then count what CouchDB (PouchDB Server here) stored against what the cameras sent (their latency
files), check that every image was answered by the configured checkpoint's version (IOTPIPE_MODEL_ARCH, resnet20:
20.3) and every label against that checkpoint's offline label, and take the cluster down. Prints the time of each
phase and ends with the one-line summary.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.cluster import Cluster, ClusterError, format_rows
from cluster.config import ClusterConfig
from iotpipe import latency_file

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
INVENTORIES = ROOT / "ansible" / "inventories"
# The inventories (given in this order, the later's variables winning) that deploy each overlay of k8s/overlays.
OVERLAY_INVENTORIES = {
    "local": ("local-cluster",),
    "local-prod": ("local-cluster", "local-cluster-prod"),
    "local-mlserver": ("local-cluster", "local-cluster-mlserver"),
}
NAMESPACE = "iotpipe"
CAMERAS = 5
RESULTS_DIR = ROOT / "results" / "k8s" / f"producers-{CAMERAS}"
DATABASE = "iot_results"
# Pods deleted during the run, in this order, each once the stored count has grown since the last one.
VICTIMS = (
    ("Kafka broker", "app.kubernetes.io/name=kafka"),
    ("bridge", "app.kubernetes.io/name=bridge"),
    ("consumer", "app.kubernetes.io/name=consumer"),
)
GROWTH = 50  # documents stored between two deletions
SETTLE_S = 300  # after the Job ends: how long stored documents may still trickle in


class E2EError(RuntimeError):
    pass


# -- pure logic (tests/deploy/test_cluster_e2e.py) ----------------------------------------------------------


def recap_changed(ansible_output: str) -> int:
    """The sum of changed=N over the hosts of ansible-playbook's PLAY RECAP."""
    recap = ansible_output.rpartition("PLAY RECAP")[2]
    return sum(int(count) for count in re.findall(r"\bchanged=(\d+)", recap))


@dataclass(frozen=True)
class Tally:
    sent: int
    stored: int
    lost: int
    duplicates: int
    unexpected: int  # stored documents of no sent image
    wrong_labels: dict[str, tuple[str, str]]  # subject: (stored label, offline label)

    def line(self, rerun_changed: int) -> str:
        return (
            f"cluster-test: sent {self.sent}, stored {self.stored}, lost {self.lost}, "
            f"duplicates {self.duplicates}, deploy rerun changed={rerun_changed}"
        )

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.unexpected == 0 and not self.wrong_labels


def other_versions(documents: list[dict], version: str) -> Counter[str]:
    """How many documents each model version other than ``version`` answered (their labels are not that one's)."""
    return Counter(document["model_version"] for document in documents if document["model_version"] != version)


def tally(sent: set[str], documents: list[dict], offline: dict[str, str]) -> Tally:
    """Compare the stored documents with the sent ids; a duplicate is a second document of one camera's image."""
    ours = [document for document in documents if document["_id"] in sent]
    per_image = Counter((document["producer_id"], document["subject"]) for document in documents)
    wrong = {
        document["subject"]: (document["label"], offline[document["subject"]])
        for document in ours
        if document["label"] != offline[document["subject"]]
    }
    return Tally(
        sent=len(sent),
        stored=len(ours),
        lost=len(sent - {document["_id"] for document in ours}),
        duplicates=sum(count - 1 for count in per_image.values()),
        unexpected=len(documents) - len(ours),
        wrong_labels=wrong,
    )


# -- phases --------------------------------------------------------------------------------------------------


@contextmanager
def phase(name: str, times: dict[str, float]) -> Iterator[None]:
    print(f"\n=== {name}", flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        times[name] = time.monotonic() - started
        print(f"=== {name}: {times[name]:.1f} s", flush=True)


def run(command: list[str], capture: bool = False) -> str:
    """Run a command from the repository root; its output is shown (and returned when ``capture``)."""
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None, check=False)
    if capture:
        print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise E2EError(f"{' '.join(command)} exited with {done.returncode}")
    return done.stdout or ""


def image_tag() -> str:
    return run([str(VENV_BIN / "python"), "docker/build_images.py", "tag"], capture=True).strip()


def build_images(tag: str, names: list[str]) -> None:
    run([str(VENV_BIN / "python"), "docker/build_images.py", "build", "--tag", tag, *names])


def overlay_images(overlay: str) -> list[str]:
    """The images that the deploy of ``overlay`` builds and imports into the node: `iotpipe_k8s_images` of the last
    of its inventories that sets it (the local-cluster inventory builds the images it deploys)."""
    images: list[str] = []
    for name in OVERLAY_INVENTORIES[overlay]:
        variables = yaml.safe_load((INVENTORIES / name / "group_vars" / "all" / "main.yml").read_text()) or {}
        images = variables.get("iotpipe_k8s_images", images)
    return images


def inventory_args(overlay: str) -> list[str]:
    """`-i` options of ansible-playbook that deploy ``overlay``."""
    return [arg for name in OVERLAY_INVENTORIES[overlay] for arg in ("-i", str(INVENTORIES / name))]


def ansible_playbook(playbook: str, overlay: str, tag: str, *extra: str) -> str:
    command = [str(VENV_BIN / "ansible-playbook"), *inventory_args(overlay), f"ansible/{playbook}"]
    return run([*command, "-e", f"iotpipe_version_tag={tag}", *extra], capture=True)


# -- the pipeline run ----------------------------------------------------------------------------------------


class Couch:
    """PouchDB Server of the cluster through `kubectl port-forward`, as the server admin (its Secret)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        secret = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "secret", "couchdb-admin", "-o", "json").stdout)
        user, password = (base64.b64decode(secret["data"][key]).decode() for key in ("username", "password"))
        self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.forward: subprocess.Popen | None = None
        # A port nobody listens on (a fixed one once met the test stack's CouchDB, which answered 401).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.local_port = probe.getsockname()[1]

    def __enter__(self) -> Couch:
        self._forward()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.forward:
            self.forward.terminate()
            self.forward.wait(timeout=10)

    def _forward(self) -> None:
        """(Again, after the CouchDB pod restarted: a port-forward ends with its pod.)"""
        if self.forward and self.forward.poll() is None:
            return
        command = [str(self.cluster.config.binary("kubectl")), f"--kubeconfig={self.cluster.config.kubeconfig}"]
        command += ["-n", NAMESPACE, "port-forward", "svc/couchdb", f"{self.local_port}:5984"]
        self.forward = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)

    def get(self, path: str) -> dict:
        for attempt in range(10):
            self._forward()
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.local_port}/{path}", headers={"Authorization": self.authorization}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read())
            except OSError as error:
                if attempt == 9:
                    raise E2EError(f"CouchDB through port-forward: GET /{path} failed: {error}") from None
                time.sleep(3)
        raise AssertionError("unreachable")

    def count(self) -> int:
        """Stored results: the documents that are not design documents."""
        rows = self.get(f"{DATABASE}/_all_docs")["rows"]
        return sum(not row["id"].startswith("_design/") for row in rows)

    def documents(self) -> list[dict]:
        rows = self.get(f"{DATABASE}/_all_docs?include_docs=true")["rows"]
        return [row["doc"] for row in rows if not row["id"].startswith("_design/")]


def delete_pod(cluster: Cluster, selector: str) -> str:
    names = cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "name").stdout.split()
    if not names:
        raise E2EError(f"no pod with {selector} to delete")
    cluster.kubectl("-n", NAMESPACE, "delete", names[0], "--wait=false")
    return names[0]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise E2EError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(2)


def disrupt(cluster: Cluster, couch: Couch, cameras: subprocess.Popen) -> None:
    """Delete each victim pod once the stored count has grown by GROWTH since the previous deletion."""
    for role, selector in VICTIMS:
        target = couch.count() + GROWTH
        wait_for(lambda: couch.count() >= target or cameras.poll() is not None, f"{GROWTH} more documents", 600)  # noqa: B023
        if cameras.poll() is not None:
            raise E2EError(f"the cameras finished before the {role} pod could be deleted: send more images")
        victim = delete_pod(cluster, selector)
        print(f"deleted the {role} pod {victim} at {couch.count()} stored documents", flush=True)


def read_sent() -> set[str]:
    files = sorted(RESULTS_DIR.glob("camera-*.csv"))
    if len(files) != CAMERAS:
        raise E2EError(f"expected {CAMERAS} latency files in {RESULTS_DIR}, found {len(files)}")
    return {image.image_id for path in files for image in latency_file.read(path)}


def checked_version() -> str:
    """The version whose offline labels are checked: the configured checkpoint's (20.3 for resnet20), the default
    version of the TorchServe image and the version that the MLServer component's bridge pins."""
    from iotpipe.config import Config
    from model_archives import model_version

    return model_version(Config.load().model_arch)


def offline_labels(subjects: set[str]) -> dict[str, str]:
    """The checkpoint's label of each picture, with the handler's preprocessing, in this process."""
    import torch

    from handlers.images import preprocess_bytes
    from handlers.resnet import CLASSES, load_checkpoint
    from iotpipe.config import Config
    from model_archives import checkpoint_path

    config = Config.load()
    model = load_checkpoint(checkpoint_path(config, config.model_arch))
    names = sorted(subjects)
    batch = torch.stack([preprocess_bytes((config.data_dir / name).read_bytes()) for name in names])
    with torch.inference_mode():
        indices = model(batch).argmax(dim=1).tolist()
    return {name: CLASSES[i] for name, i in zip(names, indices, strict=True)}


def pipeline(cluster: Cluster, overlay: str, tag: str, times: dict[str, float]) -> Tally:
    with Couch(cluster) as couch:
        with phase("pipeline: 5 cameras, deleting the Kafka broker, bridge and consumer pods", times):
            before = {document["_id"] for document in couch.documents()}
            if before:
                raise E2EError(f"{DATABASE} holds {len(before)} documents already: deploy onto a fresh cluster")
            command = [str(VENV_BIN / "ansible-playbook"), *inventory_args(overlay), "ansible/scale-producers.yml"]
            command += ["-e", f"iotpipe_version_tag={tag}", "-e", json.dumps({"iotpipe_producers_counts": [CAMERAS]})]
            print("$ " + " ".join(command), flush=True)
            cameras = subprocess.Popen(command, cwd=ROOT, text=True)
            try:
                disrupt(cluster, couch, cameras)
            finally:
                if cameras.wait() != 0:
                    raise E2EError("the producer Job failed: see the output of scale-producers.yml above")
            sent = read_sent()
            wait_for(lambda: couch.count() >= len(sent), f"{len(sent)} documents stored", SETTLE_S)
            documents = couch.documents()
        with phase("labels: offline inference of the sent pictures", times):
            version = checked_version()
            if others := other_versions(documents, version):
                raise E2EError(
                    f"documents answered by versions {dict(others)}, not {version} whose offline labels are checked: "
                    f"pin {version} in the bridge (IOTPIPE_MODEL_VERSION) or set IOTPIPE_MODEL_ARCH to the served one"
                )
            return tally(sent, documents, offline_labels({document["subject"] for document in documents}))


def stop_at_deadline(deadline_s: float) -> None:
    """Past ``deadline_s``, the command in progress is killed and the run fails through the usual path: the
    state is shown and the cluster taken down, instead of a silent kill by an outer limit (CI's)."""

    def expired(signum: int, frame: object) -> None:
        raise E2EError(f"not done within --deadline {deadline_s:.0f} s")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(max(1, int(deadline_s)))


def show_state(cluster: Cluster) -> None:
    """What a failed run leaves to read: each component, the pods and the latest events."""
    rows = cluster.status()
    print(format_rows(rows), file=sys.stderr)
    if rows[0].running:
        for args in (("get", "pods", "-A", "-o", "wide"), ("get", "events", "-A", "--sort-by=.lastTimestamp")):
            done = cluster.kubectl(*args, check=False)
            print("\n".join((done.stdout + done.stderr).splitlines()[-40:]), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the cluster up at the end (make cluster-down)")
    parser.add_argument(
        "--no-build", action="store_true", help="no image build phase (site.yml still builds the images it lacks)"
    )
    parser.add_argument(
        "--overlay",
        choices=sorted(OVERLAY_INVENTORIES),
        default="local",
        help="k8s/overlays/local (dev-sized, the default), local-prod (prod: 3 brokers, SASL_SSL, KEDA) or "
        "local-mlserver (local with MLServer in TorchServe's place)",
    )
    parser.add_argument("--deadline", type=float, metavar="SECONDS", help="fail, showing the state, after this long")
    args = parser.parse_args(argv)
    if args.deadline:
        stop_at_deadline(args.deadline)
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"  # ansible-playbook's modules
    os.environ["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_roles"  # the time of each role
    os.environ["PYTHONUNBUFFERED"] = "1"  # Ansible's lines as they come, when the output is a pipe (CI's log)
    cluster = Cluster(ClusterConfig.from_env())
    times: dict[str, float] = {}
    try:
        tag = image_tag()
        # site.yml would build it too, silently inside one Ansible task: here each step and its time is shown.
        with phase("cluster: build what is missing", times):
            run([sys.executable, "-m", "cluster", "build"])
        if not args.no_build:
            with phase("images: build", times):
                build_images(tag, overlay_images(args.overlay))
        with phase("site.yml: cluster up, images into the node, deploy", times):
            ansible_playbook("site.yml", args.overlay, tag)
        with phase("deploy again", times):
            rerun_changed = recap_changed(ansible_playbook("deploy.yml", args.overlay, tag))
        result = pipeline(cluster, args.overlay, tag, times)
    except (E2EError, ClusterError) as error:
        print(f"cluster-test: {error}", file=sys.stderr)
        show_state(cluster)
        return 1
    finally:
        signal.alarm(0)
        if not args.keep:
            with phase("cluster down", times):
                run([sys.executable, "-m", "cluster", "down"])
    print("\nphase times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items()))
    if result.wrong_labels:
        print(f"labels that differ from the offline ones: {result.wrong_labels}")
    if result.unexpected:
        print(f"{result.unexpected} stored documents belong to no sent image")
    print(result.line(rerun_changed))
    return 0 if result.passed and rerun_changed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
