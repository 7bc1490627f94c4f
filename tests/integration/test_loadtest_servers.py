"""`iotpipe loadtest --model-server both` on the real stack, with tiny counts: each server measured, compared.

The session's stack is stopped, started with TorchServe, measured, stopped, started with MLServer,
measured, stopped, and started again as it ran, so the tests after this one find it as before.
"""

import json

import pytest

from loadtest.run import LoadTest, new_run_id
from loadtest.servers import SERVERS, ServerComparison, server_config
from stack import Stack

pytestmark = pytest.mark.integration

COUNT = 4
RATE = 10.0


def test_both_model_servers_are_measured_in_turn_alike_and_the_stack_runs_again_afterwards(stack, tmp_path):
    run_id = new_run_id()
    serving: dict[str, set[str]] = {}

    def measure(config, out):
        serving[config.model_server] = {
            server for server in SERVERS if Stack(server_config(config, server)).model_server.process.pid()
        }
        return LoadTest(config, [2], RATE, COUNT, out, open_loop_count=COUNT, run_id=run_id).run()

    summaries = ServerComparison(stack, SERVERS, measure, tmp_path).run()

    assert list(summaries) == list(SERVERS)
    for server in SERVERS:
        assert serving[server] == {server}
        written = json.loads((tmp_path / server / "summary.json").read_text())
        assert [(phase["offered_rate"], phase["sent"], phase["lost"]) for phase in written["phases"]] == [
            (2 * RATE, 2 * COUNT, 0),
            (None, 2 * COUNT, 0),
        ]
        cameras = sorted(path.name for path in (tmp_path / server).glob("latency_*.txt"))
        assert cameras == sorted(path.name for path in (tmp_path / SERVERS[0]).glob("latency_*.txt")), "same cameras"
    report = (tmp_path / "comparison.md").read_text()
    assert all(f"| {server} " in report for server in SERVERS)
    assert (tmp_path / "comparison.png").read_bytes().startswith(b"\x89PNG")

    after = Stack(stack).status()
    assert all(row.running and row.healthy for row in after), [row for row in after if not row.healthy]
