"""What k8s/ promises, read off the rendered manifests of base, dev and prod."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from iotpipe.config import Config
from iotpipe.wire import input_record_limit
from tests.deploy.conftest import (
    K8S,
    OVERLAYS,
    configmap_name,
    find,
    pod_specs,
    properties,
    with_components,
)

ALL = ["base", *OVERLAYS]
DEFAULTS = Config()
# The images this project builds (docker/torchserve/Dockerfile, the targets of docker/app/Dockerfile); the others are
# upstream images.
OWN_IMAGES = {"torchserve", "bridge", "consumer", "producer"}
# Upstream images whose entrypoint writes into the image at start (k8s/README.md).
WRITABLE_ROOT = {"couchdb"}


def literal_passwords(text: str) -> list[str]:
    """The password=... values of a text that are not ${VARIABLES} filled in from a Secret at start."""
    values = (value.lstrip('\\"') for value in re.findall(r"password=(\S+)", text))
    return [value for value in values if not value.startswith("${")]


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def kafka_properties(objects: list[dict]) -> dict[str, str]:
    return properties(find(objects, "ConfigMap", configmap_name(objects, "kafka-config"))["data"]["server.properties"])


# -- TorchServe --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_torchserve_is_probed_with_its_inference_key_and_kept_alive_on_tcp(rendered, name):
    torchserve = find(rendered[name], "Deployment", "torchserve")["spec"]["template"]["spec"]["containers"][0]
    assert torchserve["readinessProbe"]["exec"]["command"] == ["ts-ping"]
    assert torchserve["startupProbe"]["exec"]["command"] == ["ts-ping"]
    assert torchserve["livenessProbe"]["tcpSocket"]["port"] == "inference"
    # ts-ping reads key_file.json from the working directory, where TorchServe writes it.
    assert torchserve["workingDir"] == "/home/model-server/run"


@pytest.mark.parametrize("name", ALL)
def test_torchserve_management_port_is_only_reachable_inside_the_namespace(rendered, name):
    objects = rendered[name]
    service = find(objects, "Service", "torchserve")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert 8081 in [port["port"] for port in service["spec"]["ports"]]
    assert not [o for o in objects if o["kind"] in {"Ingress", "Route"}]
    assert find(objects, "NetworkPolicy", "default-deny-ingress")["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    rules = find(objects, "NetworkPolicy", "torchserve")["spec"]["ingress"]
    management = [rule for rule in rules if 8081 in [port["port"] for port in rule["ports"]]]
    assert management == [
        {"from": [{"podSelector": {}}], "ports": [{"port": 8081, "protocol": "TCP"}, {"port": 8082, "protocol": "TCP"}]}
    ]


@pytest.mark.parametrize("name", ALL)
def test_bridges_read_the_inference_key_that_torchserve_publishes(rendered, name):
    objects = rendered[name]
    secret = find(objects, "Secret", "torchserve-inference-key")
    assert "data" not in secret and "stringData" not in secret
    publisher = find(objects, "Deployment", "torchserve")["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "KEY_SECRET_NAME", "value": "torchserve-inference-key"} in publisher["env"]
    role = find(objects, "Role", "torchserve-key-publisher")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["torchserve-inference-key"],
            "verbs": ["get", "patch"],
        }
    ]
    bridge = find(objects, "Deployment", "bridge")["spec"]["template"]["spec"]
    key_file = find(objects, "ConfigMap", configmap_name(objects, "iotpipe-config"))["data"][
        "IOTPIPE_TORCHSERVE_KEY_FILE"
    ]
    volume = next(v for v in bridge["volumes"] if v.get("secret", {}).get("secretName") == "torchserve-inference-key")
    mount = next(m for m in bridge["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert Path(key_file).parent == Path(mount["mountPath"])


@pytest.mark.parametrize("name", ALL)
def test_torchserve_keys_are_renewed_in_its_pod_by_the_code_of_the_embedded_stack(rendered, name):
    spec = find(rendered[name], "Deployment", "torchserve")["spec"]["template"]["spec"]
    torchserve = spec["containers"][0]
    renewer = next(c for c in spec["containers"] if c["name"] == "key-renewer")
    assert renewer["command"] == ["python", "-m", "stack.renew_keys"]
    assert renewer["image"].rsplit(":", 1)[0].endswith("iotpipe/bridge")  # the application image holds stack/
    # Liveness asks whether the keys are current, not whether TorchServe answers with one.
    assert renewer["livenessProbe"]["exec"]["command"] == [*renewer["command"], "--check"]
    env = {variable["name"]: variable["value"] for variable in renewer["env"]}
    assert env["IOTPIPE_MANAGEMENT_URL"] == "http://127.0.0.1:8081"  # its own pod's TorchServe
    assert Path(env["IOTPIPE_TORCHSERVE_KEY_FILE"]).parent == Path(torchserve["workingDir"])
    run = next(m for m in torchserve["volumeMounts"] if m["mountPath"] == torchserve["workingDir"])
    assert {**run, "readOnly": True} in renewer["volumeMounts"]


# -- security ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_pod_runs_as_non_root_without_capabilities_under_runtime_default_seccomp(rendered, name, tmp_path):
    specs = pod_specs(rendered[name]) | pod_specs(with_components(name, ["latency-collector"], tmp_path))
    problems = []
    for where, spec in specs.items():
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccomp profile is not RuntimeDefault")
        for container in containers(spec):
            context = container.get("securityContext", {})
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}/{container['name']}: privilege escalation allowed")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}/{container['name']}: capabilities not all dropped")
            if context.get("runAsUser", pod.get("runAsUser", 0)) == 0:
                problems.append(f"{where}/{container['name']}: runs as uid 0")
            writable = container["name"] in WRITABLE_ROOT
            if context.get("readOnlyRootFilesystem") is not (not writable):
                problems.append(f"{where}/{container['name']}: readOnlyRootFilesystem is not {not writable}")
    assert not problems, "\n".join(problems)


def test_the_namespace_enforces_the_restricted_pod_security_standard(rendered):
    for name in ALL:
        labels = find(rendered[name], "Namespace", "iotpipe")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", ALL)
def test_no_secret_is_committed_with_values(rendered, name):
    secrets = [o for o in rendered[name] if o["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == ["torchserve-inference-key"]
    assert all("data" not in s and "stringData" not in s for s in secrets)


def test_no_kustomization_generates_secrets():
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(kustomization.read_text()), kustomization


@pytest.mark.parametrize("name", ALL)
def test_credentials_reach_containers_only_from_secrets(rendered, name):
    problems = []
    for where, spec in pod_specs(rendered[name]).items():
        for container in containers(spec):
            for variable in container.get("env", []):
                if re.search(r"PASSWORD|USER(NAME)?$", variable["name"]) and "secretKeyRef" not in variable.get(
                    "valueFrom", {}
                ):
                    problems.append(f"{where}/{container['name']}: {variable['name']} is not from a Secret")
    for configmap in (o for o in rendered[name] if o["kind"] == "ConfigMap"):
        for key, value in configmap.get("data", {}).items():
            if "PASSWORD" in key or literal_passwords(value):
                problems.append(f"ConfigMap/{configmap['metadata']['name']}: {key} holds a password")
    assert not problems, "\n".join(problems)


# -- operations --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_object_lands_in_namespace_iotpipe(rendered, name):
    # What components add gets no namespace from base: without the overlay's, kubectl would use "default".
    stray = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in rendered[name]
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != "iotpipe"
    ]
    assert not stray, f"not in namespace iotpipe: {stray}"


@pytest.mark.parametrize("name", ALL)
def test_every_container_declares_requests_and_limits(rendered, name):
    problems = [
        f"{where}/{container['name']}: {missing}"
        for where, spec in pod_specs(rendered[name]).items()
        for container in containers(spec)
        for missing in ("requests", "limits")
        if not {"cpu", "memory"} <= set(container.get("resources", {}).get(missing, {}))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ALL)
def test_every_variable_a_container_refers_to_is_defined_before_it(rendered, name):
    """Kubernetes expands $(VAR) in env only from variables defined earlier in the list (else it stays literal, and
    prod's brokers once failed to parse "SASL_SSL://$(POD_NAME)..."): a patch that reorders env must not break it."""
    problems = []
    for where, spec in pod_specs(rendered[name]).items():
        for container in containers(spec):
            defined: set[str] = set()
            for variable in container.get("env", []):
                used = set(re.findall(r"\$\((\w+)\)", variable.get("value", "")))
                problems += [f"{where}/{container['name']}: {variable['name']} uses $({u})" for u in used - defined]
                defined.add(variable["name"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ALL)
def test_every_object_carries_the_recommended_labels(rendered, name):
    problems = []
    for o in rendered[name]:
        labels = o["metadata"].get("labels", {})
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"):
            if label not in labels:
                problems.append(f"{o['kind']}/{o['metadata']['name']}: no {label}")
    for where in pod_specs(rendered[name]):
        owner = find(rendered[name], *where.split("/"))
        template = owner if owner["kind"] == "Pod" else owner["spec"]["template"]
        if "app.kubernetes.io/name" not in template["metadata"]["labels"]:
            problems.append(f"{where}: pods without app.kubernetes.io/name")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ALL)
def test_every_long_running_workload_has_a_pod_disruption_budget(rendered, name):
    objects = rendered[name]
    budgets = [o["spec"]["selector"]["matchLabels"] for o in objects if o["kind"] == "PodDisruptionBudget"]
    for workload in (o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector in budgets, f"{workload['kind']}/{workload['metadata']['name']} has no PodDisruptionBudget"


@pytest.mark.parametrize("name", ALL)
def test_application_settings_are_fields_of_the_iotpipe_configuration(rendered, name):
    fields = {field.name for field in dataclasses.fields(Config)}
    objects = rendered[name]
    settings = set(find(objects, "ConfigMap", configmap_name(objects, "iotpipe-config"))["data"])
    for spec in pod_specs(objects).values():
        settings |= {variable["name"] for c in containers(spec) for variable in c.get("env", [])}
    unknown = [s for s in settings if s.startswith("IOTPIPE_") and s.removeprefix("IOTPIPE_").lower() not in fields]
    assert not unknown, f"not settings of iotpipe.config.Config: {unknown}"


def kafka_setup_env(objects: list[dict]) -> dict[str, dict]:
    """The variables of the kafka-setup container of the Kafka pods, by name."""
    spec = find(objects, "StatefulSet", "kafka")["spec"]["template"]["spec"]
    setup = next(c for c in spec["containers"] if c["name"] == "kafka-setup")
    return {variable["name"]: variable for variable in setup["env"]}


@pytest.mark.parametrize("name", ALL)
def test_topics_and_consumer_groups_are_those_of_the_configuration(rendered, name):
    env = {key: variable.get("value") for key, variable in kafka_setup_env(rendered[name]).items()}
    assert [env[f"KAFKA_TOPIC_{topic}"] for topic in ("IMAGES", "PREDICTIONS", "IMAGES_DLQ", "PREDICTIONS_DLQ")] == [
        DEFAULTS.images_topic,
        DEFAULTS.predictions_topic,
        DEFAULTS.dead_letter_topic,
        DEFAULTS.predictions_dead_letter_topic,
    ]
    assert int(env["KAFKA_TOPIC_PARTITIONS"]) == DEFAULTS.topic_partitions
    assert (env["KAFKA_GROUP_BRIDGE"], env["KAFKA_GROUP_CONSUMER"]) == (
        DEFAULTS.bridge_group_id,
        DEFAULTS.consumer_group_id,
    )


@pytest.mark.parametrize("name", ALL)
def test_input_topics_take_records_that_can_still_be_dead_lettered(rendered, name):
    env = kafka_setup_env(rendered[name])
    assert int(env["KAFKA_INPUT_TOPIC_MAX_MESSAGE_BYTES"]["value"]) == input_record_limit(DEFAULTS.max_request_size)
    script = (K8S / "base" / "kafka" / "setup.sh").read_text()
    for topic in ("IMAGES", "PREDICTIONS"):
        assert (
            f'topic "$KAFKA_TOPIC_{topic}" --config "max.message.bytes=$KAFKA_INPUT_TOPIC_MAX_MESSAGE_BYTES"' in script
        )


@pytest.mark.parametrize("name", ALL)
def test_kafka_pods_are_ready_only_once_the_topics_exist(rendered, name):
    spec = find(rendered[name], "StatefulSet", "kafka")["spec"]["template"]["spec"]
    setup = next(c for c in spec["containers"] if c["name"] == "kafka-setup")
    done = kafka_setup_env(rendered[name])["KAFKA_SETUP_DONE"]["value"]
    assert setup["readinessProbe"]["exec"]["command"] == ["test", "-f", done]
    assert setup["command"] == ["/bin/sh", "/etc/kafka/iotpipe/setup.sh"]
    # Nothing else makes topics: no init container waits on Kafka.
    assert not find(rendered[name], "Deployment", "bridge")["spec"]["template"]["spec"].get("initContainers")


@pytest.mark.parametrize("name", ALL)
def test_kafka_logs_go_to_stdout_and_no_gc_log_files_grow_in_the_pod(rendered, name):
    objects = rendered[name]
    kafka = find(objects, "StatefulSet", "kafka")["spec"]["template"]["spec"]
    log4j = find(objects, "ConfigMap", configmap_name(objects, "kafka-config"))["data"]["log4j2.properties"]
    appenders = {value for key, value in properties(log4j).items() if re.fullmatch(r"appender\.\w+\.type", key)}
    assert appenders == {"Console"}
    for container in kafka["containers"]:
        env = {variable["name"]: variable.get("value") for variable in container["env"]}
        assert env["KAFKA_LOG4J_OPTS"] == "-Dlog4j2.configurationFile=/etc/kafka/iotpipe/log4j2.properties"
    broker = {variable["name"]: variable.get("value") for variable in kafka["containers"][0]["env"]}
    assert "-loggc" not in broker["EXTRA_ARGS"]  # kafka-server-start.sh adds it (ten 100 MB files) unless set
    logs = next(volume for volume in kafka["volumes"] if volume["name"] == "logs")
    assert logs["emptyDir"]["sizeLimit"] == "16Mi"


# -- Kafka -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", "dev"])
def test_development_runs_one_kafka_broker_with_replication_factor_1(rendered, name):
    objects = rendered[name]
    assert find(objects, "StatefulSet", "kafka")["spec"]["replicas"] == 1
    config = kafka_properties(objects)
    assert config["controller.quorum.voters"] == "0@kafka-0.kafka-headless.iotpipe.svc:9093"
    assert config["default.replication.factor"] == "1"


def test_production_runs_three_kraft_brokers_with_replication_3_and_min_insync_2(rendered):
    objects = rendered["prod"]
    kafka = find(objects, "StatefulSet", "kafka")
    assert kafka["spec"]["replicas"] == 3
    assert kafka["spec"]["podManagementPolicy"] == "Parallel"
    config = kafka_properties(objects)
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"].split(",") == [
        f"{n}@kafka-{n}.kafka-headless.iotpipe.svc:9093" for n in range(3)
    ]
    assert config["default.replication.factor"] == "3"
    assert config["min.insync.replicas"] == "2"
    assert config["offsets.topic.replication.factor"] == "3"
    assert config["transaction.state.log.min.isr"] == "2"
    assert config["unclean.leader.election.enable"] == "false"


def test_production_kafka_speaks_sasl_ssl_scram_with_credentials_from_secrets(rendered):
    objects = rendered["prod"]
    config = kafka_properties(objects)
    assert config["listeners"] == "SASL_SSL://:9092,CONTROLLER://:9093"
    assert config["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert config["inter.broker.listener.name"] == "SASL_SSL"
    assert config["sasl.enabled.mechanisms"] == config["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert not [key for key in config if "password" in key or "jaas" in key]
    kafka = find(objects, "StatefulSet", "kafka")["spec"]["template"]["spec"]
    env = {variable["name"]: variable for variable in kafka["containers"][0]["env"]}
    assert env["KAFKA_ADVERTISED_LISTENERS"]["value"].startswith("SASL_SSL://")
    for secret_variable in ("KAFKA_SCRAM_ADMIN_PASSWORD", "KAFKA_TLS_PASSWORD"):
        assert env[secret_variable]["valueFrom"]["secretKeyRef"]["name"] == "kafka-credentials"
    tls = next(volume for volume in kafka["volumes"] if volume["name"] == "tls")
    assert tls["secret"]["secretName"] == "kafka-tls"
    app_config = find(objects, "ConfigMap", configmap_name(objects, "iotpipe-config"))["data"]
    assert app_config["IOTPIPE_SECURITY_PROTOCOL"] == "SASL_SSL"


# The Kafka client of each workload, and the SCRAM user (Secret) its role logs in as.
CLIENT_ROLES = {"Deployment/bridge": "bridge", "Deployment/consumer": "consumer", "Job/iotpipe-producers": "producer"}


def test_production_gives_each_kafka_client_role_its_own_user(rendered):
    specs = pod_specs(rendered["prod"])
    for where, role in CLIENT_ROLES.items():
        env = {variable["name"]: variable for variable in specs[where]["containers"][0]["env"]}
        for variable in ("IOTPIPE_SASL_PLAIN_USERNAME", "IOTPIPE_SASL_PLAIN_PASSWORD"):
            assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == f"kafka-user-{role}", where
    setup = kafka_setup_env(rendered["prod"])
    for role in CLIENT_ROLES.values():
        for variable in ("USER", "PASSWORD"):
            assert (
                setup[f"KAFKA_{role.upper()}_{variable}"]["valueFrom"]["secretKeyRef"]["name"] == f"kafka-user-{role}"
            )
    # KEDA logs in as the user whose password its TriggerAuthentication holds.
    keda = {
        ref["parameter"]: ref
        for ref in find(rendered["prod"], "TriggerAuthentication", "kafka-keda")["spec"]["secretTargetRef"]
    }
    for parameter in ("username", "password"):
        reference = setup[f"KAFKA_KEDA_{'USER' if parameter == 'username' else 'PASSWORD'}"]["valueFrom"][
            "secretKeyRef"
        ]
        assert (reference["name"], reference["key"]) == (keda[parameter]["name"], keda[parameter]["key"])


def acls(script: str) -> dict[tuple[str, str], set[str]]:
    """{(user variable, operation): resources} of the `allow` lines of setup.sh, e.g. "topic:$KAFKA_TOPIC_IMAGES"."""
    found: dict[tuple[str, str], set[str]] = {}
    for user, operation, options in re.findall(r'^\s*allow "\$(\w+)" (\w+) (.*)$', script, re.MULTILINE):
        resources = {f"{kind}:{value}" for kind, value in re.findall(r'--(topic|group) "\$(\w+)"', options)}
        found.setdefault((user, operation), set()).update(resources)
    return found


def test_each_kafka_user_may_do_its_part_and_nothing_else():
    granted = acls((K8S / "base" / "kafka" / "setup.sh").read_text())
    assert granted == {
        ("KAFKA_BRIDGE_USER", "Read"): {"topic:KAFKA_TOPIC_IMAGES", "group:KAFKA_GROUP_BRIDGE"},
        ("KAFKA_BRIDGE_USER", "Write"): {"topic:KAFKA_TOPIC_PREDICTIONS", "topic:KAFKA_TOPIC_IMAGES_DLQ"},
        ("KAFKA_CONSUMER_USER", "Read"): {"topic:KAFKA_TOPIC_PREDICTIONS", "group:KAFKA_GROUP_CONSUMER"},
        ("KAFKA_CONSUMER_USER", "Write"): {"topic:KAFKA_TOPIC_PREDICTIONS_DLQ"},
        # A camera writes images and reads the results, with assigned partitions (no group).
        ("KAFKA_PRODUCER_USER", "Write"): {"topic:KAFKA_TOPIC_IMAGES"},
        ("KAFKA_PRODUCER_USER", "Read"): {"topic:KAFKA_TOPIC_PREDICTIONS"},
        ("KAFKA_KEDA_USER", "Describe"): {"topic:KAFKA_TOPIC_IMAGES", "group:KAFKA_GROUP_BRIDGE"},
    }


def test_production_kafka_denies_what_no_acl_allows_and_trusts_only_its_own_principals(rendered):
    config = kafka_properties(rendered["prod"])
    assert config["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert config["allow.everyone.if.no.acl.found"] == "false"
    # The controllers authenticate with the brokers' certificate: its subject is the one super user here;
    # start.sh adds the admin user.
    assert config["super.users"] == f"User:CN={certificate()['subject']['CN']}"
    start = (K8S / "base" / "kafka" / "start.sh").read_text()
    assert 'echo "super.users=${certificate_users:+${certificate_users};}User:${KAFKA_SCRAM_ADMIN_USER}"' in start
    assert "--add-scram" in start and "CLIENT" not in start  # only the admin exists before the cluster runs


def certificate() -> dict[str, dict[str, str]]:
    """The sections of overlays/prod/kafka-certificate.cnf (OpenSSL's configuration format)."""
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in (K8S / "overlays" / "prod" / "kafka-certificate.cnf").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            current = line.strip("[] ")
            sections[current] = {}
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            sections[current][key] = value
    return sections


def certificate_names() -> list[str]:
    names = certificate()["broker"]["subjectAltName"].split(",")
    return [name.strip().removeprefix("DNS:") for name in names]


def carried(host: str) -> bool:
    """Whether the certificate's names cover ``host`` as TLS hostname verification does (one-label wildcards)."""
    for name in certificate_names():
        if name.startswith("*."):
            label, _, rest = host.partition(".")
            if label and rest == name[2:]:
                return True
        elif host == name:
            return True
    return False


def hosts(addresses: str) -> list[str]:
    """The host names of "[LISTENER://]host:port,..." or "id@host:port,..."."""
    return [re.sub(r"^(\w+://|\d+@)", "", address).rsplit(":", 1)[0] for address in addresses.split(",")]


def test_every_kafka_address_in_prod_is_a_name_of_the_brokers_certificate(rendered):
    objects = rendered["prod"]
    config = kafka_properties(objects)
    app_config = find(objects, "ConfigMap", configmap_name(objects, "iotpipe-config"))["data"]
    kafka = find(objects, "StatefulSet", "kafka")
    env = {
        variable["name"]: variable.get("value")
        for variable in kafka["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    pods = [f"kafka-{n}" for n in range(kafka["spec"]["replicas"])]
    advertised = [
        host.replace("$(POD_NAME)", pod).replace("$(POD_NAMESPACE)", "iotpipe")
        for pod in pods
        for host in hosts(env["KAFKA_ADVERTISED_LISTENERS"])
    ]
    setup = kafka_setup_env(objects)["KAFKA_SETUP_BOOTSTRAP"]["value"]
    (trigger,) = find(objects, "ScaledObject", "bridge")["spec"]["triggers"]
    used = {
        "controller.quorum.voters": hosts(config["controller.quorum.voters"]),
        "advertised.listeners": advertised,
        "IOTPIPE_BOOTSTRAP_SERVERS": hosts(app_config["IOTPIPE_BOOTSTRAP_SERVERS"]),
        "KEDA bootstrapServers": hosts(trigger["metadata"]["bootstrapServers"]),
        "kafka-setup": [
            h.replace("$(POD_NAME)", pod).replace("$(POD_NAMESPACE)", "iotpipe") for pod in pods for h in hosts(setup)
        ],
    }
    missing = {where: [h for h in names if not carried(h)] for where, names in used.items()}
    assert not any(missing.values()), f"names the certificate does not carry: {missing}"
    assert certificate()["broker"]["extendedKeyUsage"] == "serverAuth, clientAuth"
    # The voters are the pods of the StatefulSet, under its governing Service.
    assert hosts(config["controller.quorum.voters"]) == [
        f"{pod}.{kafka['spec']['serviceName']}.iotpipe.svc" for pod in pods
    ]


# -- autoscaling -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_the_bridge_has_at_most_one_autoscaler_and_then_no_fixed_replica_count(rendered, name):
    objects = rendered[name]
    scalers = [
        o
        for o in objects
        if (o["kind"] == "ScaledObject" and o["spec"]["scaleTargetRef"]["name"] == "bridge")
        or (o["kind"] == "HorizontalPodAutoscaler" and o["spec"]["scaleTargetRef"]["name"] == "bridge")
    ]
    assert len(scalers) <= 1, [o["kind"] for o in scalers]
    bridge = find(objects, "Deployment", "bridge")
    assert ("replicas" in bridge["spec"]) is (not scalers)


def test_dev_scales_the_bridge_on_cpu_and_prod_on_consumer_lag_with_keda(rendered):
    assert (
        find(rendered["dev"], "HorizontalPodAutoscaler", "bridge")["spec"]["maxReplicas"] == DEFAULTS.topic_partitions
    )
    scaled = find(rendered["prod"], "ScaledObject", "bridge")["spec"]
    assert scaled["maxReplicaCount"] == DEFAULTS.topic_partitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == DEFAULTS.bridge_group_id
    assert trigger["metadata"]["topic"] == DEFAULTS.images_topic
    assert trigger["authenticationRef"] == {"name": "kafka-keda"}
    find(rendered["prod"], "TriggerAuthentication", "kafka-keda")
    keda_policy = find(rendered["prod"], "NetworkPolicy", "kafka-from-keda")["spec"]["ingress"][0]
    assert keda_policy["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]


def test_kustomize_refuses_both_autoscaler_components_at_once(tmp_path):
    # Each component removes the bridge's replica count; the second finds none and kustomize stops.
    with pytest.raises(AssertionError, match="Unable to remove nonexistent key: replicas"):
        with_components("dev", ["autoscale-keda"], tmp_path)


# -- producers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_the_producer_job_runs_one_indexed_camera_by_default(rendered, name):
    job = find(rendered[name], "Job", "iotpipe-producers")["spec"]
    assert (job["parallelism"], job["completions"], job["completionMode"]) == (1, 1, "Indexed")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_each_producer_component_runs_that_many_cameras(overlay, count, tmp_path):
    job = find(with_components(overlay, [f"producers-{count}"], tmp_path), "Job", "iotpipe-producers")
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (count, count)
    producer = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PRODUCERS", "value": str(count)} in producer["env"]
    assert "--latency-file=/latency/producers-$(PRODUCERS)/camera-$(JOB_COMPLETION_INDEX).csv" in producer["args"]
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "latency", "persistentVolumeClaim": {"claimName": "iotpipe-latency"}} in volumes


def test_prod_latency_volume_is_shared_by_cameras_on_several_nodes(rendered):
    assert find(rendered["prod"], "PersistentVolumeClaim", "iotpipe-latency")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    assert find(rendered["dev"], "PersistentVolumeClaim", "iotpipe-latency")["spec"]["accessModes"] == ["ReadWriteOnce"]


# -- CouchDB -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_couchdb_is_governed_by_a_headless_service(rendered, name):
    objects = rendered[name]
    governing = find(objects, "Service", find(objects, "StatefulSet", "couchdb")["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("name", ALL)
def test_couchdb_keeps_its_uuid_and_cookie_secret_across_restarts(rendered, name):
    objects = rendered[name]
    ini = find(objects, "ConfigMap", configmap_name(objects, "couchdb-config"))["data"]["10-iotpipe.ini"]
    assert re.search(r"^\[couchdb\][^\[]*^uuid = [0-9a-f]{32}$", ini, re.MULTILINE | re.DOTALL)
    couchdb = find(objects, "StatefulSet", "couchdb")["spec"]["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable for variable in couchdb["env"]}
    assert env["COUCHDB_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "couchdb-admin", "key": "secret"}


@pytest.mark.parametrize("name", ALL)
def test_the_consumer_writes_as_a_user_of_the_results_database_not_as_the_server_admin(rendered, name):
    spec = find(rendered[name], "Deployment", "consumer")["spec"]["template"]["spec"]
    consumer = next(c for c in spec["containers"] if c["name"] == "consumer")
    secrets = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]["name"]
        for variable in consumer["env"]
        if "secretKeyRef" in variable.get("valueFrom", {}) and "COUCHDB" in variable["name"]
    }
    assert secrets == {"IOTPIPE_COUCHDB_USER": "couchdb-consumer", "IOTPIPE_COUCHDB_PASSWORD": "couchdb-consumer"}
    # Only its init container, which makes that user, sees the admin's credentials.
    (setup,) = spec["initContainers"]
    assert setup["command"] == ["python", "/etc/iotpipe/couchdb/setup.py"]
    admin = {
        variable["valueFrom"]["secretKeyRef"]["name"]
        for variable in setup["env"]
        if "secretKeyRef" in variable["valueFrom"]
    }
    assert admin == {"couchdb-admin", "couchdb-consumer"}


# -- liveness of the processing loops ----------------------------------------------------------


def run_probe(command: list[str], ready: Path) -> int:
    """Exit status of a probe command of the manifests, run here with its paths moved under ``ready``'s folder."""
    script = K8S / "base" / "probes" / Path(command[1]).name
    arguments = [str(ready) if argument == "/tmp/iotpipe/ready" else argument for argument in command[2:]]
    return subprocess.run(["sh", str(script), *arguments], capture_output=True, timeout=10).returncode


@pytest.mark.parametrize("service", ["bridge", "consumer"])
def test_a_stuck_processing_loop_is_restarted_but_one_that_waits_out_an_outage_is_not(rendered, service, tmp_path):
    spec = find(rendered["prod"], "Deployment", service)["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == service)
    assert container["args"] == ["--ready-file", "/tmp/iotpipe/ready"]
    liveness = container["livenessProbe"]["exec"]["command"]
    assert container["startupProbe"]["exec"]["command"] == liveness
    ready = tmp_path / "ready"
    assert run_probe(liveness, ready) == 1  # never polled
    ready.write_text("now")
    assert run_probe(liveness, ready) == 0  # polling
    stale = time.time() - 301
    os.utime(ready, (stale, stale))
    assert run_probe(liveness, ready) == 1  # no poll for 301 s: stuck
    ready.with_suffix(".waiting").write_text("waiting for TorchServe since ...")
    assert run_probe(liveness, ready) == 0  # waiting out an outage, however long, is not stuck
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes[mounts["/etc/iotpipe/probes"]]["configMap"]["name"].startswith("iotpipe-probes-")


@pytest.mark.parametrize("name", ALL)
def test_a_bridge_without_the_torchserve_key_starts_and_waits_for_it(rendered, name):
    spec = find(rendered[name], "Deployment", "bridge")["spec"]["template"]["spec"]
    key = next(v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "torchserve-inference-key")
    assert key["secret"]["optional"] is True  # no ContainerCreating until the Secret exists: the bridge waits
    assert not spec.get("initContainers")


@pytest.mark.parametrize("name", ALL)
def test_only_the_key_publisher_holds_a_service_account_token(rendered, name):
    specs = pod_specs(rendered[name]) | pod_specs(with_components(name, ["latency-collector"], Path("/nonexistent")))
    for where, spec in specs.items():
        assert spec.get("automountServiceAccountToken") is False, where
    spec = find(rendered[name], "Deployment", "torchserve")["spec"]["template"]["spec"]
    token_volumes = {
        volume["name"]
        for volume in spec["volumes"]
        if any("serviceAccountToken" in source for source in volume.get("projected", {}).get("sources", []))
    }
    holders = {c["name"] for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] in token_volumes}
    assert holders == {"key-publisher"}


# -- images ------------------------------------------------------------------------------------


# local: also the stand-ins for apache/kafka and couchdb (test_local_overlay.py).
@pytest.mark.parametrize("overlay", [overlay for overlay in OVERLAYS if overlay != "local"])
def test_the_project_images_are_fully_qualified_and_tagged_by_the_overlay(rendered, overlay):
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    assert sorted(entry["name"] for entry in kustomization["images"]) == sorted(
        f"localhost/iotpipe/{image}" for image in OWN_IMAGES
    )
    own = [
        container
        for spec in pod_specs(rendered[overlay]).values()
        for container in containers(spec)
        if "iotpipe/" in container["image"]
    ]
    assert own
    for container in own:
        name, _, tag = container["image"].rpartition(":")
        assert name.removeprefix("localhost/iotpipe/") in OWN_IMAGES, container["image"]
        assert tag and tag != "latest", container["image"]
        # A new tag rolls out; an image imported into the node is used without a registry.
        assert container["imagePullPolicy"] == "IfNotPresent", container["image"]
