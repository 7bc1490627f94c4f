"""The dashboard's arithmetic and its tolerance of services that are not up: no stack needed."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from dashboard.metrics import Scrape, scrape, total
from dashboard.readings import accuracy_table, iso, latency_summary, stored_per_second
from dashboard.server import INERT_POLICY, Dashboard
from iotpipe.config import Config
from iotpipe.couch import DOCUMENT_FIELDS, document_for
from tests.unit.test_couch_client import FakeCouch
from tests.unit.test_wire import make_prediction

METRICS_PAGE = """\
# HELP iotpipe_bridge_records_total Records taken from iot-images, by outcome
# TYPE iotpipe_bridge_records_total counter
iotpipe_bridge_records_total{outcome="predicted"} 120.0
iotpipe_bridge_records_total{outcome="dead_letter"} 3.0
# HELP iotpipe_bridge_records_created Records taken from iot-images, by outcome
# TYPE iotpipe_bridge_records_created gauge
iotpipe_bridge_records_created{outcome="predicted"} 1.7e+09
# HELP iotpipe_bridge_batch_size Images per micro-batch
# TYPE iotpipe_bridge_batch_size histogram
iotpipe_bridge_batch_size_bucket{le="1.0"} 2.0
iotpipe_bridge_batch_size_bucket{le="+Inf"} 10.0
iotpipe_bridge_batch_size_count 10.0
iotpipe_bridge_batch_size_sum 120.0
# HELP iotpipe_bridge_consumer_lag Records not yet taken from iot-images
# TYPE iotpipe_bridge_consumer_lag gauge
iotpipe_bridge_consumer_lag 7.0
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_metrics_are_read_by_full_sample_name_and_label() -> None:
    page = Scrape.parse(METRICS_PAGE)
    assert page.value("iotpipe_bridge_records_total", outcome="dead_letter") == 3.0
    assert page.value("iotpipe_bridge_records_total") == 123.0
    assert page.value("iotpipe_bridge_consumer_lag") == 7.0
    assert page.mean("iotpipe_bridge_batch_size") == 12.0
    assert page.value("iotpipe_consumer_lag") is None
    assert page.mean("iotpipe_bridge_inference_seconds") is None


def test_a_metrics_endpoint_that_is_not_up_reads_as_unknown() -> None:
    assert scrape(f"http://127.0.0.1:{free_port()}/metrics", timeout_s=0.5) is None


def test_a_total_with_an_unknown_part_is_unknown_rather_than_too_small() -> None:
    assert total([3.0, 0.0]) == 3.0
    assert total([3.0, None]) is None


def test_throughput_is_the_rate_over_the_last_window_of_stored_counts() -> None:
    samples: deque[tuple[float, int]] = deque()
    assert stored_per_second(samples, 0.0, 5.0) is None
    samples.append((0.0, 100))
    assert stored_per_second(samples, 0.0, 5.0) is None, "one reading gives no rate"
    samples.append((0.2, 101))
    assert stored_per_second(samples, 0.2, 5.0) is None, "two readings too close together give no rate"
    for second in range(1, 11):
        samples.append((float(second), 100 + 10 * second))
    assert stored_per_second(samples, 10.0, 5.0) == pytest.approx(10.0)
    assert samples[0][0] == 5.0, "readings older than the window are dropped"
    samples.append((11.0, 200))  # nothing stored for a second
    assert stored_per_second(samples, 11.0, 5.0) == pytest.approx(8.0)


def test_latency_percentiles_are_stored_at_minus_sent_at() -> None:
    sent = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    documents = [
        {"sent_at": iso(datetime.fromtimestamp(sent, UTC)), "stored_at": iso(datetime.fromtimestamp(sent + s, UTC))}
        for s in (0.01, 0.02, 0.03, 0.04, 1.0)
    ]
    documents.append({"stored_at": documents[0]["stored_at"]})  # no sent_at: left out
    summary = latency_summary(documents, 60.0)
    assert summary["count"] == 5
    assert summary["p50"] == pytest.approx(0.03, abs=1e-5)
    assert summary["p95"] == pytest.approx(0.04 + 0.8 * 0.96, abs=1e-5)  # linear interpolation, as numpy
    assert latency_summary([], 60.0) == {"p50": None, "p95": None, "count": 0, "window_s": 60.0}


def test_timestamps_keep_the_documents_format_so_that_they_compare_as_text() -> None:
    assert iso(datetime(2026, 11, 28, 7, 58, 27, 167323, tzinfo=UTC)) == "2026-11-28T07:58:27.167323Z"


def test_accuracy_is_correct_over_all_with_ground_truth_per_model_version_in_version_order() -> None:
    totals = {"20.10": (4, 1), "20.9": (100, 92), "56.1": (3, 3), "44.1": (0, 0)}
    assert accuracy_table(totals, "cifar10-resnet") == [
        {"model": "cifar10-resnet", "model_version": "20.9", "correct": 92, "total": 100, "accuracy": 0.92},
        {"model": "cifar10-resnet", "model_version": "20.10", "correct": 1, "total": 4, "accuracy": 0.25},
        {"model": "cifar10-resnet", "model_version": "56.1", "correct": 3, "total": 3, "accuracy": 1.0},
    ]


def test_the_page_and_its_endpoints_answer_when_couchdb_and_the_services_are_down() -> None:
    nothing = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    config = Config.load(
        environ={}, couchdb_url=nothing, bridge_metrics_port=free_port(), consumer_metrics_port=free_port()
    )
    with Dashboard(config, port=port) as dashboard:
        threading.Thread(target=dashboard.serve, daemon=True).start()

        def get(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(dashboard.url + path, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        status, page = get("")
        assert status == 200 and b"static/dashboard.js" in page
        assert get("static/dashboard.js")[0] == 200
        assert get("static/missing.js")[0] == 404
        stats = json.loads(get("api/stats")[1])
        assert stats["stored"] is None and stats["throughput"] is None and "CouchDB" in stats["couchdb_error"]
        assert stats["dead_letters"]["total"] is None and stats["lag"]["total"] is None
        assert json.loads(get("api/latest")[1])["images"] is None
        assert json.loads(get("api/accuracy")[1])["versions"] is None
        assert get("images/abc")[0] == 502


def test_a_taken_port_is_reported_with_what_to_do() -> None:
    port = free_port()
    config = Config.load(environ={})
    with Dashboard(config, port=port), pytest.raises(RuntimeError, match="IOTPIPE_DASHBOARD_PORT"):
        Dashboard(config, port=port)


# -- the page's own defences, in front of a stand-in CouchDB


@pytest.fixture
def couchdb() -> Iterator[FakeCouch]:
    server = FakeCouch()
    yield server
    server.close()


@pytest.fixture
def dashboard(couchdb: FakeCouch) -> Iterator[Dashboard]:
    with Dashboard(couchdb.config(), port=0) as serving:
        threading.Thread(target=serving.serve, daemon=True).start()
        yield serving


def ask(dashboard: Dashboard, path: str, host: str | None = None) -> http.client.HTTPResponse:
    """GET ``path`` exactly as written (no client-side normalisation), with ``host`` as the Host header."""
    port = int(dashboard.url.rstrip("/").rpartition(":")[2])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    connection.putheader("Host", host or f"127.0.0.1:{port}")
    connection.endheaders()
    response = connection.getresponse()
    response.read()
    return response


def test_a_request_for_another_host_name_is_refused_against_dns_rebinding(dashboard: Dashboard) -> None:
    port = dashboard.url.rstrip("/").rpartition(":")[2]
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{int(port) + 1}", f"localhost.evil:{port}"):
        assert ask(dashboard, "/api/latest", host).status == 421, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert ask(dashboard, "/", host).status == 200, host


def test_the_page_may_load_only_its_own_files_and_every_other_answer_is_inert(
    dashboard: Dashboard, couchdb: FakeCouch
) -> None:
    couchdb.on("GET", "abc/image", (200, b"\xff\xd8jpeg"), **{"Content-Type": "image/jpeg"})
    page = ask(dashboard, "/").headers["Content-Security-Policy"]
    assert "default-src 'none'" in page and "script-src 'self'" in page and "frame-ancestors 'none'" in page
    for path in ("/images/abc", "/api/latest", "/static/dashboard.js", "/missing"):
        response = ask(dashboard, path)
        assert response.headers["Content-Security-Policy"] == INERT_POLICY, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


@pytest.mark.parametrize(
    ("path", "doc_id"),
    [
        ("/images/_design%2Fiotpipe", None),
        ("/images/_all_docs", None),
        ("/images/..", None),
        ("/images/%2E%2E", None),
        ("/images/ab%00c", None),
        ("/images/a/b", None),
        ("/images/..%2F_all_docs", None),
        ("/images/a%2Fb%2F..%2F..%2F_config", None),
        ("/images/cat%3Fattachments=true", "cat?attachments=true"),
        ("/images/a%252F_all_docs", "a%2F_all_docs"),
        ("/images/cat%23x", "cat#x"),
    ],
)
def test_an_image_path_reaches_one_attachment_of_one_document_or_nothing(
    dashboard: Dashboard, couchdb: FakeCouch, path: str, doc_id: str | None
) -> None:
    assert ask(dashboard, path).status == 404
    asked = [request.path for request in couchdb.asked("GET")]
    if doc_id is None:
        assert asked == [], f"{path} reached CouchDB"
    else:
        (only,) = asked
        database, document, attachment = only.removeprefix("/").split("/")
        assert (database, urllib.parse.unquote(document), attachment) == ("iot_results", doc_id, "image")


@pytest.mark.parametrize("stored_type", ["text/html", "image/svg+xml", "application/octet-stream", ""])
def test_an_attachment_that_is_not_a_jpeg_or_png_is_not_served(
    dashboard: Dashboard, couchdb: FakeCouch, stored_type: str
) -> None:
    couchdb.on("GET", "abc/image", (200, b"<script>alert(1)</script>"), **{"Content-Type": stored_type})
    response = ask(dashboard, "/images/abc")
    assert response.status == 415
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_an_image_is_served_with_its_allowed_type_not_the_stored_header(
    dashboard: Dashboard, couchdb: FakeCouch
) -> None:
    couchdb.on("GET", "abc/image", (200, b"\x89PNG"), **{"Content-Type": "IMAGE/PNG; name=<x>"})
    response = ask(dashboard, "/images/abc")
    assert response.status == 200 and response.headers["Content-Type"] == "image/png"


def test_each_latest_image_shows_its_stored_result_with_its_url_score_and_latency(
    dashboard: Dashboard, couchdb: FakeCouch
) -> None:
    document = document_for(make_prediction(), stored_at="2026-01-01T00:00:01Z")
    couchdb.on("POST", "_index", (200, {"result": "exists"}))
    couchdb.on("POST", "_find", (200, {"docs": [{name: document[name] for name in DOCUMENT_FIELDS}]}))
    with urllib.request.urlopen(f"{dashboard.url}api/latest", timeout=10) as response:
        (tile,) = json.loads(response.read())["images"]
    result = {name: value for name, value in make_prediction().result().items() if name != "id"}
    assert tile == result | {
        "id": "abc",
        "stored_at": "2026-01-01T00:00:01Z",
        "image_digest": document["image_digest"],
        "url": "images/abc",
        "score": 0.6,
        "latency_s": pytest.approx(1.0),
    }
    (find,) = [request.body for request in couchdb.asked("POST") if request.path.endswith("/_find")]
    assert find["fields"] == DOCUMENT_FIELDS
