"""`python -m cluster verify`: the promises the next steps rely on, checked on the running cluster.
A Deployment becomes Ready through its readiness probe, a pod reaches it by its Service's DNS name,
and a PVC of the default StorageClass is bound and written. Everything runs in one namespace that is
deleted at the end (its volume with it)."""

from __future__ import annotations

import json
import time
from typing import Any

from cluster.cluster import Cluster, ClusterError
from cluster.config import CLUSTER_DOMAIN, HELPER_IMAGE

NAMESPACE = "cluster-verify"
LABELS = {"app": "web"}


def container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": HELPER_IMAGE, "imagePullPolicy": "Never", "command": command, **extra}


def manifests() -> dict[str, Any]:
    web = container(
        "web",
        ["python3", "-m", "http.server", "8080"],
        ports=[{"containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    )
    host = f"web.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
    script = (
        "set -e; echo verified > /data/probe; cat /data/probe; getent hosts " + host + "; "
        f"curl -fsS --retry 20 --retry-delay 1 --retry-all-errors -o /dev/null http://{host}/; echo reached {host}"
    )
    client = container("client", ["sh", "-c", script], volumeMounts=[{"name": "data", "mountPath": "/data"}])
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": NAMESPACE},
                "spec": {
                    "selector": {"matchLabels": LABELS},
                    "template": {
                        "metadata": {"labels": LABELS},
                        "spec": {"containers": [web], "terminationGracePeriodSeconds": 1},
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": NAMESPACE},
                "spec": {"selector": LABELS, "ports": [{"port": 80, "targetPort": 8080}]},
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": NAMESPACE},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
            },
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "client", "namespace": NAMESPACE},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 180,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [client],
                            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                        }
                    },
                },
            },
        ],
    }


def verify(cluster: Cluster) -> dict[str, float]:
    """Run the checks; returns the seconds of each, raises ClusterError naming the one that failed."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    cluster.kubectl("create", "namespace", NAMESPACE)
    try:
        wait_for(cluster, "service account default", "-n", NAMESPACE, "get", "serviceaccount", "default")
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(manifests()))
        step = time.monotonic()
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/web", "--timeout=120s")
        timings["deployment ready (readiness probe)"] = round(time.monotonic() - step, 1)
        step = time.monotonic()
        done = cluster.kubectl(
            "-n", NAMESPACE, "wait", "--for=condition=complete", "job/client", "--timeout=180s", check=False
        )
        logs = cluster.kubectl("-n", NAMESPACE, "logs", "job/client", check=False).stdout.strip()
        if done.returncode != 0:
            raise ClusterError(f"the client job did not complete: {done.stderr.strip()}; its log: {logs}")
        timings["service by DNS name + PVC written"] = round(time.monotonic() - step, 1)
        phase = cluster.kubectl("-n", NAMESPACE, "get", "pvc", "data", "-o", "jsonpath={.status.phase}").stdout
        if phase != "Bound":
            raise ClusterError(f"PVC {NAMESPACE}/data is {phase}, not Bound")
        print(logs)
    finally:
        step = time.monotonic()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--timeout=120s", check=False)
        wait_for(cluster, "no PersistentVolume left", "get", "pv", "-o", "name", expect_empty=True)
        timings["cleanup"] = round(time.monotonic() - step, 1)
    timings["total"] = round(time.monotonic() - started, 1)
    return timings


def wait_for(cluster: Cluster, what: str, *args: str, expect_empty: bool = False, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = cluster.kubectl(*args, check=False)
        if done.returncode == 0 and (not expect_empty or not done.stdout.strip()):
            return
        time.sleep(1)
    raise ClusterError(f"waited {timeout_s:.0f} s for {what}")
