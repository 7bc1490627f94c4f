"""What k8s/ promises about monitoring: pods that can be scraped, monitors that find them, a dashboard of real metrics.

The bridge and the consumer serve /metrics on the ports of the application's configuration; TorchServe
serves its own on the port of ``metrics_address``. Prometheus runs in namespace ``monitoring``
(k8s/README.md, Monitoring). The dashboard's PromQL is checked against the metrics that the bridge and
the consumer register with prometheus_client, read from the code itself.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import defaultdict
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY

from iotpipe.config import Config
from tests.deploy.conftest import K8S, OVERLAYS, ROOT, configmap_name, find, properties

ALL = ["base", *OVERLAYS]
DEFAULTS = Config()
# The pods that serve Prometheus metrics: the Deployment that runs them and its container.
METRICS_WORKLOADS = ["bridge", "consumer", "torchserve"]
# Prometheus's pods: the NetworkPolicies admit them by the name of their namespace.
FROM_MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
# Labels that Prometheus adds to every series it scrapes through prometheus-operator's monitors.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint", "service"}
DASHBOARD = K8S / "components" / "monitoring" / "grafana-dashboard.json"
# The modules that register the bridge's and the consumer's metrics with prometheus_client.
METRICS_MODULES = ["bridges.bridge", "consumer.storage", "producer.camera"]
# TorchServe's own metrics (its metrics API); the dashboard may use any ts_* name.
TORCHSERVE_PREFIX = "ts_"


def metrics_ports(objects: list[dict]) -> dict[str, int]:
    """{Deployment name: port of its /metrics}, from the application's configuration as the manifests set it."""
    settings = find(objects, "ConfigMap", configmap_name(objects, "iotpipe-config"))["data"]

    def setting(field: str) -> str:
        return settings.get(f"IOTPIPE_{field.upper()}", str(getattr(DEFAULTS, field)))

    return {
        "bridge": int(setting("bridge_metrics_port")),
        "consumer": int(setting("consumer_metrics_port")),
        "torchserve": urlsplit(setting("metrics_url")).port,
    }


def template(objects: list[dict], deployment: str) -> dict:
    return find(objects, "Deployment", deployment)["spec"]["template"]


def named_ports(pod_template: dict) -> dict[str, int]:
    """{port name: container port} over the containers of a pod template."""
    return {
        port["name"]: port["containerPort"]
        for container in pod_template["spec"]["containers"]
        for port in container.get("ports", [])
        if "name" in port
    }


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels only: the manifests use nothing else) selects these labels."""
    assert set(selector) <= {"matchLabels"}, f"selector with more than matchLabels: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def watched_namespaces(monitor: dict) -> list[str]:
    """The namespaces a monitor looks in: those it names, by default only its own."""
    return monitor["spec"].get("namespaceSelector", {}).get("matchNames", [monitor["metadata"]["namespace"]])


def pod_templates(objects: list[dict], namespace: str, selector: dict) -> dict[str, dict]:
    """{Deployment name: pod template} of the Deployments of a namespace whose pods a selector selects."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]
        for d in objects
        if d["kind"] == "Deployment"
        and d["metadata"].get("namespace") == namespace
        and selects(selector, d["spec"]["template"]["metadata"]["labels"])
    }


def pod_monitor_targets(monitor: dict, objects: list[dict]) -> set[tuple[str, int]]:
    """{(Deployment, container port)} that a PodMonitor scrapes; fails on a port name that no pod has."""
    where = f"PodMonitor/{monitor['metadata']['name']}"
    pods = {
        name: pod
        for namespace in watched_namespaces(monitor)
        for name, pod in pod_templates(objects, namespace, monitor["spec"]["selector"]).items()
    }
    assert pods, f"{where} selects no pods"
    targets = set()
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        for name, pod in pods.items():
            ports = named_ports(pod)
            assert endpoint["port"] in ports, f"{where}: {name} has no port {endpoint['port']}"
            targets.add((name, ports[endpoint["port"]]))
    return targets


def service_monitor_targets(monitor: dict, objects: list[dict]) -> set[tuple[str, int]]:
    """{(Deployment, container port)} that a ServiceMonitor scrapes through its Services' named ports.

    Fails on a monitor that selects no Service, a port name that the Service lacks, or a Service port
    whose targetPort no pod behind it has.
    """
    where = f"ServiceMonitor/{monitor['metadata']['name']}"
    services = [
        s
        for s in objects
        if s["kind"] == "Service"
        and s["metadata"].get("namespace") in watched_namespaces(monitor)
        and selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    ]
    assert services, f"{where} selects no Service"
    targets = set()
    for endpoint in monitor["spec"]["endpoints"]:
        for service in services:
            name = f"Service {service['metadata']['name']}"
            service_ports = {port.get("name"): port for port in service["spec"]["ports"]}
            assert endpoint["port"] in service_ports, f"{where}: {name} has no port {endpoint['port']}"
            target_port = service_ports[endpoint["port"]]["targetPort"]
            pods = pod_templates(
                objects, service["metadata"]["namespace"], {"matchLabels": service["spec"]["selector"]}
            )
            assert pods, f"{where}: {name} selects no pods"
            for deployment, pod in pods.items():
                ports = named_ports(pod)
                number = ports.get(target_port) if isinstance(target_port, str) else target_port
                assert number in ports.values(), f"{where}: {deployment} has no port {target_port}"
                targets.add((deployment, number))
    return targets


def monitored_pods(objects: list[dict], kind: str) -> dict[str, set[tuple[str, int]]]:
    """{"Kind/monitor name": {(Deployment, container port)}} for every ServiceMonitor or PodMonitor."""
    targets = pod_monitor_targets if kind == "PodMonitor" else service_monitor_targets
    return {f"{kind}/{o['metadata']['name']}": targets(o, objects) for o in objects if o["kind"] == kind}


# -- PromQL, as much of it as the dashboard needs ----------------------------------------------

_STRING = r'"(?:\\.|[^"\\])*"'
_NOT_SELECTORS = re.compile(
    r"\[[^\]]*\]"  # range and subquery durations, Grafana's $__rate_interval included
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # grouping labels
    r"|\boffset\s+-?[0-9a-z]+"  # offset durations
)
_TOKEN = re.compile(rf"{_STRING}|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?(\s*\{{[^}}]*\}})?")
_MATCHER = re.compile(rf"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*({_STRING})")
_KEYWORDS = {"and", "or", "unless", "bool", "group_left", "group_right", "atan2", "inf", "nan"}


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(metric name, [(label, operator, value)])] of the instant and range selectors of a PromQL expression.

    Functions (a name followed by "("), grouping labels (by, without, on, ignoring ...), durations
    (Grafana's $__rate_interval included), strings and numbers are not metric names.
    """
    found = []
    for name, call, braces in _TOKEN.findall(_NOT_SELECTORS.sub(" ", expr)):
        if not name or call or name.lower() in _KEYWORDS:
            continue
        matchers = [(label, op, json.loads(value)) for label, op, value in _MATCHER.findall(braces)]
        found.append((name, matchers))
    return found


def test_the_selector_reader_finds_metric_names_and_matchers_only():
    expr = (
        'histogram_quantile(0.95, sum by (le, pod) (rate(a_bucket{outcome="x", pod=~"b.*"}[$__rate_interval])))'
        " / on (pod) group_left sum without (le) (b offset 5m) * 1e6 + count(c) > bool 2.5"
        ' + label_replace(d, "dst", "$1", "src", "(.*)")'
    )
    assert selectors(expr) == [
        ("a_bucket", [("outcome", "=", "x"), ("pod", "=~", "b.*")]),
        ("b", []),
        ("c", []),
        ("d", []),
    ]


# -- what the application exports ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exported() -> dict[str, dict[str, set[str]]]:
    """{sample name: {label: values}} of every iotpipe_* metric of the bridge, the consumer and the cameras."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    samples: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for family in REGISTRY.collect():
        if family.name.startswith("iotpipe_"):
            for sample in family.samples:
                labels = samples[sample.name]
                for label, value in sample.labels.items():
                    labels[label].add(value)
    assert samples, f"no iotpipe_* metrics registered by {METRICS_MODULES}"
    return samples


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions(dashboard: dict) -> dict[str, str]:
    """{"panel title/refId": PromQL} of every query of every panel (rows' panels included)."""
    panels = [*dashboard["panels"], *(p for row in dashboard["panels"] for p in row.get("panels", []))]
    return {f"{p['title']}/{t['refId']}": t["expr"] for p in panels for t in p.get("targets", [])}


# -- pods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_pod_that_serves_metrics_is_annotated_for_scraping_on_a_port_named_metrics(rendered, name):
    objects = rendered[name]
    problems = []
    for deployment, port in metrics_ports(objects).items():
        pod = template(objects, deployment)
        annotations = pod["metadata"].get("annotations", {})
        expected = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
        if {key: annotations.get(key) for key in expected} != expected:
            problems.append(f"{deployment}: annotations {annotations}, expected {expected}")
        if named_ports(pod).get("metrics") != port:
            problems.append(f"{deployment}: no container port metrics: {port} ({named_ports(pod)})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ALL)
def test_the_bridge_and_the_consumer_serve_metrics_on_every_interface_of_their_pod(rendered, name):
    objects = rendered[name]
    config_map = configmap_name(objects, "iotpipe-config")
    assert find(objects, "ConfigMap", config_map)["data"]["IOTPIPE_METRICS_BIND_ADDRESS"] == "0.0.0.0"
    for deployment in ("bridge", "consumer"):
        container = template(objects, deployment)["spec"]["containers"][0]
        assert {"configMapRef": {"name": config_map}} in container["envFrom"], deployment
        assert "IOTPIPE_METRICS_BIND_ADDRESS" not in {variable["name"] for variable in container.get("env", [])}


@pytest.mark.parametrize("name", ALL)
def test_torchserve_metrics_api_listens_on_the_pod_port_named_metrics(rendered, name):
    config = properties((ROOT / "docker" / "torchserve" / "config.properties").read_text())
    address = urlsplit(config["metrics_address"])
    assert address.hostname == "0.0.0.0"
    assert (
        address.port
        == named_ports(template(rendered[name], "torchserve"))["metrics"]
        == metrics_ports(rendered[name])["torchserve"]
    )


def test_torchserve_answers_its_metrics_api_in_prometheus_format():
    config = properties((ROOT / "docker" / "torchserve" / "config.properties").read_text())
    assert config.get("metrics_mode") == "prometheus"


@pytest.mark.parametrize("name", ALL)
def test_prometheus_in_namespace_monitoring_reaches_the_metrics_ports_and_nothing_else(rendered, name):
    objects = rendered[name]
    ports = metrics_ports(objects)
    labels = {deployment: template(objects, deployment)["metadata"]["labels"] for deployment in ports}
    admitted = defaultdict(list)
    problems = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        where = f"NetworkPolicy/{policy['metadata']['name']}"
        selected = [d for d in ports if selects(policy["spec"]["podSelector"], labels[d])]
        for rule in policy["spec"].get("ingress", []):
            if FROM_MONITORING not in rule.get("from", []):
                continue
            if rule["from"] != [FROM_MONITORING]:
                problems.append(f"{where}: a rule for Prometheus admits more peers: {rule['from']}")
            pods = [o for o in objects if o["kind"] in {"Deployment", "StatefulSet", "Job"}]
            others = [
                p["metadata"]["name"]
                for p in pods
                if p["metadata"]["name"] not in ports
                and selects(policy["spec"]["podSelector"], p["spec"]["template"]["metadata"]["labels"])
            ]
            if others:
                problems.append(f"{where}: Prometheus admitted to pods that serve no metrics: {others}")
            for deployment in selected:
                if rule.get("ports") != [{"port": ports[deployment], "protocol": "TCP"}]:
                    problems.append(f"{where}: Prometheus admitted to {deployment} on {rule.get('ports')}")
                admitted[deployment].append(where)
    for deployment in ports:
        if not admitted[deployment]:
            problems.append(f"{deployment}: no NetworkPolicy admits Prometheus to port {ports[deployment]}")
    assert not problems, "\n".join(problems)


# -- prometheus-operator's monitors (components/monitoring, in prod) -------------------------------


def test_every_service_monitor_selects_an_existing_service_port(rendered):
    scraped = monitored_pods(rendered["prod"], "ServiceMonitor")
    assert scraped, "prod has no ServiceMonitor"
    for monitor in (o for o in rendered["prod"] if o["kind"] == "ServiceMonitor"):
        assert all(endpoint.get("path", "/metrics") == "/metrics" for endpoint in monitor["spec"]["endpoints"])


def test_every_pod_monitor_selects_existing_pods_on_a_named_port(rendered):
    scraped = monitored_pods(rendered["prod"], "PodMonitor")
    assert scraped, "prod has no PodMonitor"
    for monitor in (o for o in rendered["prod"] if o["kind"] == "PodMonitor"):
        assert all(
            endpoint.get("path", "/metrics") == "/metrics" for endpoint in monitor["spec"]["podMetricsEndpoints"]
        )


def test_prod_scrapes_each_pod_that_serves_metrics_once_on_its_metrics_port(rendered):
    objects = rendered["prod"]
    scraped = monitored_pods(objects, "ServiceMonitor") | monitored_pods(objects, "PodMonitor")
    by_target = defaultdict(list)
    for monitor, targets in scraped.items():
        for target in targets:
            by_target[target].append(monitor)
    assert {target: len(monitors) for target, monitors in by_target.items()} == {
        (deployment, port): 1 for deployment, port in metrics_ports(objects).items()
    }, dict(by_target)


def test_dev_and_base_need_no_prometheus_operator(rendered):
    for name in ["base", "dev"]:
        assert not [o for o in rendered[name] if o["apiVersion"].startswith("monitoring.coreos.com/")], name


# -- the Grafana dashboard -----------------------------------------------------------------------


def test_the_dashboard_reaches_grafana_as_a_configmap_for_its_sidecar(rendered, dashboard):
    config_map = find(rendered["prod"], "ConfigMap", "iotpipe-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = config_map["data"].values()
    assert json.loads(content) == dashboard


def test_the_dashboard_panels_are_well_formed(dashboard):
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert refs and len(set(refs)) == len(refs), f"{panel['title']}: refIds {refs}"


def test_every_dashboard_query_uses_only_metrics_that_the_services_export(dashboard, exported):
    problems = []
    for where, expr in expressions(dashboard).items():
        found = selectors(expr)
        if not found:
            problems.append(f"{where}: no metric in {expr}")
        for name, matchers in found:
            if name.startswith(TORCHSERVE_PREFIX):
                continue
            if name not in exported:
                problems.append(f"{where}: {name} is not exported by the bridge or the consumer")
                continue
            for label, operator, value in matchers:
                if label not in exported[name] and label not in TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label}")
                elif operator == "=" and label in exported[name] and value not in exported[name][label]:
                    problems.append(f"{where}: {name}{{{label}={value!r}}} is never exported")
    assert not problems, "\n".join(problems)


def test_the_dashboard_shows_every_metric_of_the_pipeline_and_torchserve_latencies(dashboard, exported):
    used = {name for expr in expressions(dashboard).values() for name, _ in selectors(expr)}
    families = {family.name for family in REGISTRY.collect() if family.name.startswith("iotpipe_")}
    missing = [f for f in families if not any(name == f or name.startswith(f"{f}_") for name in used)]
    assert not missing, f"metrics without a panel: {missing}"
    assert {"ts_inference_latency_microseconds", "ts_queue_latency_microseconds"} <= used


def test_the_dashboard_shows_p50_and_p95_of_the_end_to_end_latency(dashboard):
    queries = [re.sub(r"\s+", "", expr) for expr in expressions(dashboard).values()]
    for quantile in ("0.5", "0.95"):
        assert any(
            q.startswith(f"histogram_quantile({quantile},") and "iotpipe_end_to_end_seconds_bucket" in q
            for q in queries
        ), quantile
