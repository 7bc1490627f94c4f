"""The stack hands its own configuration to every process it starts; the layers import only downwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.commands import build_parser, main
from iotpipe.config import Config
from stack import Stack
from stack.process import Service

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"up", "down", "status", "supervise", "bridge", "consumer", "produce", "models", "results"}
COMMANDS |= {"loadtest", "bench", "analyze", "dashboard", "dlq"}
# Ports that nothing on a test machine serves, so that every component reads as down.
NOTHING_THERE = {
    "bootstrap_servers": "127.0.0.1:1",
    "couchdb_url": "http://127.0.0.1:1",
    "inference_url": "http://127.0.0.1:1",
}


@pytest.fixture
def modified(tmp_path: Path) -> Config:
    """A configuration that differs from the defaults and from any IOTPIPE_* variable of the test's shell."""
    return Config(state_dir=tmp_path, model_arch="resnet56", canary_share=0.25, couchdb_password="pw", **NOTHING_THERE)


def test_a_stack_built_with_a_modified_config_hands_exactly_that_config_to_its_children(modified: Config) -> None:
    stack = Stack(modified)
    for process in (stack.bridge.process, stack.consumer.process, stack.supervisor):
        assert Config.load(process.env) == modified, process.name


def test_a_child_runs_with_the_config_it_was_handed_not_the_variables_of_the_parent(
    modified: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTPIPE_MODEL_ARCH", "resnet32")
    monkeypatch.setenv("IOTPIPE_TEST_ONLY_LEFTOVER", "1")
    seen = modified.state_dir / "seen.json"
    program = (
        "import json, os, sys, time\n"
        "from iotpipe.config import Config\n"
        "unknown = [name for name in os.environ if name.startswith('IOTPIPE_') and name not in Config().environ()]\n"
        "open(sys.argv[1], 'w').write(json.dumps([Config.load().environ(), unknown]))\n"
        "time.sleep(60)\n"
    )
    child = Service(
        name="child",
        command=[sys.executable, "-c", program, str(seen)],
        healthy=seen.exists,
        state_dir=modified.state_dir,
        env=modified.environ(),
        start_timeout_s=30,
    )
    try:
        child.start()
    finally:
        child.stop(timeout_s=5)
    environ, unknown = json.loads(seen.read_text())
    assert Config.load(environ) == modified
    assert unknown == []


def test_status_lists_every_component_in_start_order_with_its_own_detail_then_the_supervisor(
    modified: Config,
) -> None:
    rows = Stack(modified).status()
    assert [row.name for row in rows] == ["kafka", "couchdb", "torchserve", "bridge", "consumer", "supervisor"]
    details = {row.name: row.detail for row in rows}
    assert details["kafka"] == modified.bootstrap_servers
    assert details["couchdb"] == f"{modified.couchdb_url}/{modified.couchdb_database}"
    assert details["torchserve"] == modified.inference_url
    assert details["bridge"] == str(modified.state_dir / "logs" / "bridge.log")
    assert not any(row.running or row.healthy for row in rows)


def test_the_iotpipe_command_keeps_every_subcommand() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == COMMANDS


def test_a_bad_setting_stops_a_command_with_the_variable_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"], environ={"IOTPIPE_CANARY_SHARE": "2"}) == 1
    assert "IOTPIPE_CANARY_SHARE=2.0: give a number from 0 to 1" in capsys.readouterr().err


def test_the_shared_package_imports_nothing_above_it() -> None:
    program = (
        "import importlib, pkgutil, sys, iotpipe\n"
        "for module in pkgutil.iter_modules(iotpipe.__path__): importlib.import_module(f'iotpipe.{module.name}')\n"
        "print(sorted({name.split('.')[0] for name in sys.modules}))"
    )
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, check=True)
    above = {"app", "stack", "model_archives", "bridges", "consumer", "producer", "loadtest", "dashboard", "handlers"}
    assert above.isdisjoint(json.loads(loaded.stdout.replace("'", '"')))
