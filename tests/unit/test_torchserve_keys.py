"""TorchServe's keys: renewed at half their life through the token API, re-read when refused."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from iotpipe.config import Config
from iotpipe.torchserve import ManagementClient, ManagementError, api_key, key_expirations
from stack.renew_keys import KeyRenewer, expired_keys

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REFUSED = {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed."}


def write_key_file(path: Path, inference: str, management: str, expires: datetime) -> None:
    """key_file.json as TorchServe 0.12 writes it (nanoseconds and a Z in the expiry)."""
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    path.write_text(
        json.dumps(
            {
                "management": {"key": management, "expiration time": stamp},
                "inference": {"key": inference, "expiration time": stamp},
                "API": {"key": "api-key"},
            },
            indent=2,
        )
    )


class FakeTorchServe:
    """The management API's key handling: /token renews a key (rewriting the file), /models needs the key."""

    def __init__(self, key_file: Path, clock) -> None:
        self.key_file = key_file
        self.clock = clock
        self.renewals: list[str] = []
        self.refuse_next_with_renewal = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                url = urlparse(self.path)
                if url.path != "/token" or self.headers["Authorization"] != "Bearer api-key":
                    return self.answer(400, REFUSED)
                fake.renew(parse_qs(url.query)["type"][0])
                return self.answer(200, {})

            def do_GET(self) -> None:
                if fake.refuse_next_with_renewal:  # a renewal lands between reading the key and the request
                    fake.refuse_next_with_renewal = False
                    fake.renew("management")
                    return self.answer(400, REFUSED)
                if self.headers["Authorization"] != f"Bearer {api_key(fake.key_file, 'management')}":
                    return self.answer(400, REFUSED)
                return self.answer(200, {"models": [{"modelName": "cifar10-resnet"}]})

            def answer(self, status: int, body: dict) -> None:
                self.send_response(status)
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def renew(self, api: str) -> None:
        keys = json.loads(self.key_file.read_text())
        keys[api]["key"] = f"{api}-{len(self.renewals) + 1}"
        keys[api]["expiration time"] = (self.clock() + timedelta(minutes=1)).isoformat()
        self.key_file.write_text(json.dumps(keys))
        self.renewals.append(api)


@pytest.fixture
def clock():
    now = [START]
    tick = lambda: now[0]  # noqa: E731
    tick.advance = lambda seconds: now.__setitem__(0, now[0] + timedelta(seconds=seconds))
    return tick


@pytest.fixture
def torchserve(tmp_path: Path, clock):
    key_file = tmp_path / "key_file.json"
    write_key_file(key_file, "inference-0", "management-0", START + timedelta(minutes=1))
    fake = FakeTorchServe(key_file, clock)
    yield fake
    fake.server.shutdown()


def config_of(torchserve: FakeTorchServe) -> Config:
    return Config(management_url=torchserve.url, torchserve_key_file=torchserve.key_file)


def test_the_expiry_of_torchserve_0_12_reads_as_an_aware_utc_time(tmp_path: Path) -> None:
    write_key_file(tmp_path / "key_file.json", "i", "m", START)
    assert key_expirations(tmp_path / "key_file.json")["inference"] == ("i", START)


def test_each_key_is_renewed_at_half_its_life_and_again_at_half_the_new_ones(torchserve, clock) -> None:
    renewer = KeyRenewer(config_of(torchserve), clock=clock)
    assert renewer.renew_due() == []
    clock.advance(29)
    assert renewer.renew_due() == []
    clock.advance(1)
    assert renewer.renew_due() == ["inference", "management"]
    assert api_key(torchserve.key_file, "inference") == "inference-1"
    assert renewer.renew_due() == []  # the next check sees the new keys, a minute to live
    clock.advance(29)
    assert renewer.renew_due() == []
    clock.advance(1)
    assert renewer.renew_due() == ["inference", "management"]
    assert torchserve.renewals == ["inference", "management"] * 2


def test_a_key_found_expired_is_renewed_at_once(torchserve, clock) -> None:
    clock.advance(120)
    assert expired_keys(config_of(torchserve), clock()) == ["inference", "management"]
    assert KeyRenewer(config_of(torchserve), clock=clock).renew_due() == ["inference", "management"]
    assert expired_keys(config_of(torchserve), clock()) == []


def test_a_renewal_that_torchserve_does_not_answer_is_tried_again_at_the_next_check(torchserve, clock) -> None:
    config = config_of(torchserve).replace(management_url="http://127.0.0.1:1")
    renewer = KeyRenewer(config, clock=clock)
    assert renewer.renew_due() == []
    clock.advance(45)
    assert renewer.renew_due() == []
    renewer.management = ManagementClient(config_of(torchserve))
    assert renewer.renew_due() == ["inference", "management"]


def test_the_management_client_reads_the_key_again_when_a_renewal_refused_it(torchserve) -> None:
    torchserve.refuse_next_with_renewal = True
    assert ManagementClient(config_of(torchserve)).models() == ["cifar10-resnet"]


def test_a_key_file_of_another_torchserve_is_refused_with_what_to_do(torchserve, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    write_key_file(other, "x", "y", START)
    with pytest.raises(ManagementError, match="IOTPIPE_TORCHSERVE_KEY_FILE"):
        ManagementClient(config_of(torchserve).replace(torchserve_key_file=other)).models()


def test_a_key_file_caught_half_rewritten_is_read_again(tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{\n  "management": {\n    "key": "m')  # TorchServe truncates, then writes
    finish = threading.Timer(0.2, write_key_file, (key_file, "new", "m", START))
    finish.start()
    started = time.monotonic()
    assert api_key(key_file, "inference") == "new"
    assert time.monotonic() - started < 1
