"""No one reaches the database or the management API without credentials; services bind to loopback."""

from __future__ import annotations

import ipaddress

import psutil
import pytest
import requests

from iotpipe.config import Config
from stack.component import host_port


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def test_couchdb_refuses_anonymous_reads_and_writes(stack: Config) -> None:
    database = f"{stack.couchdb_url}/{stack.couchdb_database}"
    assert requests.get(f"{database}/_all_docs", timeout=10).status_code == 401
    assert requests.post(database, json={"anonymous": True}, timeout=10).status_code == 401
    assert requests.get(f"{database}/_all_docs", auth=stack.couchdb_credentials, timeout=10).ok


def test_couchdb_password_is_a_private_file_not_a_default(stack: Config) -> None:
    assert stack.couchdb_secret_file.stat().st_mode & 0o077 == 0
    assert len(stack.couchdb_password.get_secret_value()) >= 24


@pytest.mark.parametrize("path", ["/models", "/models/cifar10-resnet"])
def test_torchserve_management_needs_the_token(stack: Config, path: str) -> None:
    response = requests.get(f"{stack.management_url}{path}", timeout=10)
    assert response.status_code in (400, 401)
    assert "Token Authorization failed" in response.text


def test_every_stack_port_listens_on_loopback_only(stack: Config) -> None:
    ports = {
        host_port(address)[1]
        for address in (
            stack.bootstrap_servers,
            stack.inference_url,
            stack.management_url,
            stack.metrics_url,
            stack.couchdb_url,
        )
    }
    ports |= {stack.grpc_inference_port, stack.grpc_management_port, stack.bridge_metrics_port}
    ports |= {stack.consumer_metrics_port, host_port(stack.bootstrap_servers)[1] + 1}  # + the KRaft controller
    ports |= {host_port(stack.kafka_sasl_ssl_address)[1]}
    listening = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN"}
    exposed = {port: listening[port] for port in ports if port in listening and not is_loopback(listening[port])}
    assert exposed == {}
    assert ports <= set(listening), f"not listening: {sorted(ports - set(listening))}"
