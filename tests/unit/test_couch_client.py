"""The CouchDB client against a real HTTP server in-process: every failure has its class, every write its outcome."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotpipe import couch
from iotpipe.config import NO_SECRET, Config, SecretStr
from iotpipe.couch import CouchRefused, CouchUnavailable, Outcome, WriteOutcome
from tests.unit.test_wire import make_prediction

PASSWORD = "s3cret-Pa55word"
Answer = tuple[int, object]  # HTTP status, JSON body (bytes: sent as they are)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # as sent, still quoted
    query: dict[str, list[str]]
    authorization: str
    body: object


class FakeCouch:
    """A stand-in for CouchDB on 127.0.0.1: answers each (method, path) as a test says; records every request.

    ``GET /`` (the health probe) and ``HEAD /<database>`` answer 200 unless told otherwise; anything
    else not told answers 404 ``not_found: missing``.
    """

    def __init__(self, database: str = "iot_results") -> None:
        self.database = database
        self.requests: list[Request] = []
        self.routes: dict[tuple[str, str], Callable[[object], Answer] | Answer] = {
            ("GET", "/"): (200, {"couchdb": "Welcome"}),
            ("HEAD", f"/{database}"): (200, b""),
        }
        self.headers: dict[tuple[str, str], dict[str, str]] = {}
        handler = type("Handler", (_FakeHandler,), {"couch": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def on(self, method: str, path: str, answer: Callable[[object], Answer] | Answer, **headers: str) -> None:
        """Answer ``method path`` (path after the database, "" for the database itself) with ``answer``."""
        full = f"/{self.database}/{path}" if path else f"/{self.database}"
        self.routes[method, full] = answer
        self.headers[method, full] = headers

    def config(self, **changes) -> Config:
        settings = dict(couchdb_url=self.url, couchdb_password=PASSWORD, couchdb_timeout_s=2.0) | changes
        return Config.load(environ={}, **settings)

    def asked(self, method: str) -> list[Request]:
        return [request for request in self.requests if request.method == method]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _FakeHandler(BaseHTTPRequestHandler):
    couch: FakeCouch

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.couch.requests.append(
            Request(self.command, parts.path, parse_qs(parts.query), self.headers.get("Authorization", ""), body)
        )
        route = self.couch.routes.get((self.command, parts.path), (404, {"error": "not_found", "reason": "missing"}))
        status, payload = route(body) if callable(route) else route
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} | self.couch.headers.get((self.command, parts.path), {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[FakeCouch]:
    server = FakeCouch()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- failures: an outage is CouchUnavailable, a refused request is CouchRefused


def test_a_refused_connection_is_an_outage() -> None:
    db = couch.database(Config.load(environ={}, couchdb_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(CouchUnavailable, match="is it up"):
        db.info()


def test_a_server_that_never_answers_is_an_outage_after_the_configured_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = Config.load(environ={}, couchdb_url=f"http://127.0.0.1:{silent.getsockname()[1]}")
        db = couch.database(config.replace(couchdb_timeout_s=0.5))
        started = time.monotonic()
        with pytest.raises(CouchUnavailable, match=r"no answer in 0\.5 s"):
            couch.save_all(db, [couch.document_for(make_prediction())])
        assert time.monotonic() - started < 2.0


def test_refused_credentials_are_an_outage_that_names_what_to_check_but_not_the_password(fake: FakeCouch) -> None:
    fake.on("GET", "", (401, {"error": "unauthorized", "reason": "Name or password is incorrect."}))
    with pytest.raises(CouchUnavailable, match="IOTPIPE_COUCHDB_PASSWORD") as raised:
        couch.database(fake.config()).info()
    assert PASSWORD not in str(raised.value)


def test_credentials_travel_as_basic_auth_never_in_the_url(fake: FakeCouch) -> None:
    fake.on("GET", "", (200, {"doc_count": 0}))
    db = couch.database(fake.config())
    db.info()
    expected = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert [request.authorization for request in fake.requests] == [expected]
    assert PASSWORD not in repr(db) and PASSWORD not in db.url


@pytest.mark.parametrize("status", [403, 408, 429])
def test_forbidden_timed_out_or_too_many_requests_are_outages(fake: FakeCouch, status: int) -> None:
    fake.on("POST", "_bulk_docs", (status, {"error": "some", "reason": "thing"}))
    with pytest.raises(CouchUnavailable):
        couch.save_all(couch.database(fake.config()), [couch.document_for(make_prediction())])


def test_a_missing_database_is_an_outage_that_says_how_to_create_it(fake: FakeCouch) -> None:
    fake.on("HEAD", "", (404, b""))
    fake.on("POST", "_bulk_docs", (404, {"error": "not_found", "reason": "Database does not exist."}))
    with pytest.raises(CouchUnavailable, match="iotpipe up"):
        couch.save_all(couch.database(fake.config()), [couch.document_for(make_prediction())])


def test_a_server_error_while_the_health_probe_fails_is_an_outage(fake: FakeCouch) -> None:
    fake.on("POST", "_bulk_docs", (500, {"error": "unknown_error", "reason": "eaddrinuse"}))
    fake.routes["GET", "/"] = (503, {"error": "starting"})
    with pytest.raises(CouchUnavailable, match="not answering GET /"):
        couch.save_all(couch.database(fake.config()), [couch.document_for(make_prediction())])


def test_a_server_error_while_the_health_probe_answers_refuses_the_request(fake: FakeCouch) -> None:
    fake.on("POST", "_bulk_docs", (500, {"error": "badarg", "reason": "Some query argument is invalid"}))
    with pytest.raises(CouchRefused, match="badarg") as raised:
        couch.save_all(couch.database(fake.config()), [couch.document_for(make_prediction())])
    assert raised.value.status == 500


@pytest.mark.parametrize("status", [400, 413, 415])
def test_a_bulk_write_refused_as_a_whole_is_refused_with_its_status(fake: FakeCouch, status: int) -> None:
    reason = {"error": "bad_request", "reason": "Only reserved document ids may start with underscore."}
    fake.on("POST", "_bulk_docs", (status, reason))
    with pytest.raises(CouchRefused, match="underscore") as raised:
        couch.save_all(couch.database(fake.config()), [couch.document_for(make_prediction(id="_x"))])
    assert raised.value.status == status


def test_an_answer_that_is_not_one_result_per_document_is_an_outage(fake: FakeCouch) -> None:
    fake.on("POST", "_bulk_docs", (201, [{"id": "abc", "ok": True}]))
    documents = [couch.document_for(make_prediction(id=doc_id)) for doc_id in ("abc", "def")]
    with pytest.raises(CouchUnavailable, match="2 documents"):
        couch.save_all(couch.database(fake.config()), documents)


def test_something_else_than_couchdb_answering_is_an_outage(fake: FakeCouch) -> None:
    fake.on("POST", "_find", (200, b"<html>proxy login</html>"), **{"Content-Type": "text/html"})
    with pytest.raises(CouchUnavailable, match="not CouchDB's JSON"):
        couch.results_of(couch.database(fake.config()), "cam-1")


# -- save_all: one outcome per document, in order


def test_each_document_of_a_bulk_write_has_its_outcome_in_order(fake: FakeCouch) -> None:
    new, again, other, bad = (make_prediction(id=doc_id) for doc_id in ("new", "again", "other", "bad"))
    stored_other = couch.document_for(make_prediction(id="other", image=b"\x89PNG another image"))
    fake.on(
        "POST",
        "_bulk_docs",
        (
            201,
            [
                {"id": "new", "ok": True, "rev": "1-a"},
                {"id": "again", "error": "conflict", "reason": "Document update conflict."},
                {"id": "other", "error": "conflict", "reason": "Document update conflict."},
                {"id": "bad", "error": "forbidden", "reason": "only images allowed"},
            ],
        ),
    )
    stored = {"again": couch.document_for(again), "other": stored_other}
    fake.on("POST", "_all_docs", lambda body: (200, {"rows": [_row(key, stored[key]) for key in body["keys"]]}))
    outcomes = couch.save_all(couch.database(fake.config()), [couch.document_for(p) for p in (new, again, other, bad)])
    assert [(o.id, o.outcome) for o in outcomes] == [
        ("new", Outcome.STORED),
        ("again", Outcome.ALREADY_STORED),
        ("other", Outcome.CONFLICT),
        ("bad", Outcome.REFUSED),
    ]
    assert outcomes[1] == WriteOutcome("again", "already_stored")
    assert stored_other[couch.DIGEST_FIELD] in outcomes[2].reason
    assert couch.image_digest(other.image) in outcomes[2].reason
    assert "forbidden: only images allowed" in outcomes[3].reason
    (lookup,) = fake.asked("POST")[1:]
    assert lookup.body == {"keys": ["again", "other"]}, "the stored documents are read in one request"
    assert lookup.query == {"include_docs": ["true"]}, "without their attachments"


def test_a_conflict_with_no_stored_document_left_is_refused_not_taken_for_stored(fake: FakeCouch) -> None:
    fake.on("POST", "_bulk_docs", (201, [{"id": "abc", "error": "conflict", "reason": "Document update conflict."}]))
    fake.on("POST", "_all_docs", (200, {"rows": [{"key": "abc", "error": "not_found"}]}))
    (outcome,) = couch.save_all(couch.database(fake.config()), [couch.document_for(make_prediction())])
    assert outcome.outcome == Outcome.REFUSED


def test_nothing_to_write_sends_nothing(fake: FakeCouch) -> None:
    assert couch.save_all(couch.database(fake.config()), []) == []
    assert fake.requests == []


def _row(key: str, document: dict) -> dict:
    stub = {name: value for name, value in document.items() if name != "_attachments"}
    return {"id": key, "key": key, "value": {"rev": "1-a"}, "doc": stub | {"_rev": "1-a"}}


# -- the database and its helpers


def test_creating_the_database_makes_it_private_with_its_index_and_view_and_keeps_what_exists(
    fake: FakeCouch,
) -> None:
    fake.on("PUT", "", (412, {"error": "file_exists", "reason": "The database could not be created."}))
    fake.on("PUT", "_security", (200, {"ok": True}))
    fake.on("POST", "_index", (200, {"result": "exists"}))
    fake.on("POST", "", (409, {"error": "conflict", "reason": "Document update conflict."}))
    couch.database(fake.config(), create=True)
    asked = {(request.method, request.path): request.body for request in fake.requests}
    assert asked["PUT", "/iot_results/_security"]["members"]["names"] == ["admin"]
    assert asked["POST", "/iot_results/_index"] == couch.BY_PRODUCER_INDEX
    assert asked["POST", "/iot_results"] == couch.DESIGN


# -- the server's admins: the embedded stack ends CouchDB's admin party with them


def test_the_admin_party_lists_its_admins_and_a_server_with_admins_hides_them_from_others(fake: FakeCouch) -> None:
    anonymous = couch.Database(fake.config().replace(couchdb_password=NO_SECRET))
    fake.routes["GET", "/_config/admins"] = (200, {})
    assert anonymous.server_admins() == []
    fake.routes["GET", "/_config/admins"] = (200, {"admin": "-pbkdf2-..."})
    assert anonymous.server_admins() == ["admin"]
    fake.routes["GET", "/_config/admins"] = (401, {"error": "unauthorized", "reason": "You are not a server admin."})
    assert anonymous.server_admins() is None
    assert {request.authorization for request in fake.requests} == {""}


def test_an_admin_is_added_with_its_password_as_couchdb_reads_it(fake: FakeCouch) -> None:
    fake.routes["PUT", "/_config/admins/admin"] = (200, "")
    couch.Database(fake.config().replace(couchdb_password=NO_SECRET)).add_server_admin("admin", SecretStr(PASSWORD))
    (request,) = fake.asked("PUT")
    assert (request.path, request.body) == ("/_config/admins/admin", PASSWORD)


def test_an_admin_that_cannot_be_added_says_what_couchdb_answered(fake: FakeCouch) -> None:
    fake.routes["PUT", "/_config/admins/admin"] = (400, {"error": "bad_request", "reason": "no config"})
    with pytest.raises(CouchRefused, match="bad_request: no config"):
        couch.Database(fake.config().replace(couchdb_password=NO_SECRET)).add_server_admin("admin", SecretStr(PASSWORD))


@pytest.mark.parametrize(
    ("answer", "admin"),
    [
        ((200, {"ok": True, "userCtx": {"name": "admin", "roles": ["_admin"]}}), True),
        ((200, {"ok": True, "userCtx": {"name": "reader", "roles": []}}), False),
        ((401, {"error": "unauthorized", "reason": "Name or password is incorrect."}), False),
    ],
)
def test_a_server_admin_is_who_couchdbs_session_says_has_the_admin_role(
    fake: FakeCouch, answer: Answer, admin: bool
) -> None:
    fake.routes["GET", "/_session"] = answer
    assert couch.Database(fake.config()).is_server_admin() is admin
    (request,) = fake.requests
    assert request.authorization == "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()


def test_accuracy_sums_the_views_rows_per_version_for_all_or_one_producer(fake: FakeCouch) -> None:
    rows = [
        {"key": ["20.1", "cam-1"], "value": {"count": 10, "sum": 9}},
        {"key": ["20.1", "cam-2"], "value": {"count": 5, "sum": 1}},
        {"key": ["56.1", "cam-2"], "value": {"count": 2, "sum": 2}},
    ]
    fake.on("GET", "_design/iotpipe/_view/accuracy", (200, {"rows": rows}))
    db = couch.database(fake.config())
    assert couch.accuracy_by_version(db) == {"20.1": (15, 10), "56.1": (2, 2)}
    assert couch.accuracy_by_version(db, producer_id="cam-2") == {"20.1": (5, 1), "56.1": (2, 2)}
    assert fake.requests[0].query == {"group": ["true"]}


def test_results_of_a_producer_are_one_mango_query(fake: FakeCouch) -> None:
    fake.on("POST", "_find", (200, {"docs": [{"_id": "abc"}]}))
    assert couch.results_of(couch.database(fake.config()), "cam-1", ["_id"]) == [{"_id": "abc"}]
    assert fake.requests[0].body["selector"] == {"producer_id": "cam-1"}


def test_calls_from_many_threads_at_once_all_succeed(fake: FakeCouch) -> None:
    fake.on("GET", "", (200, {"doc_count": 7}))
    db = couch.database(fake.config())
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(db.info()["doc_count"])) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert counts == [7] * 16


@given(st.text())
def test_a_document_path_addresses_one_ordinary_document_or_is_refused(doc_id: str) -> None:
    try:
        path = couch.document_path(doc_id)
    except ValueError:
        return
    assert "/" not in path and "?" not in path and "#" not in path and path not in (".", "..")
    assert unquote(path) == doc_id and not doc_id.startswith("_")


@pytest.mark.parametrize("doc_id", ["", "_design/iotpipe", "_all_docs", "a/b", "..", ".", "ab\x00c", "ab\x1bc"])
def test_ids_that_could_address_anything_but_one_document_have_no_path(doc_id: str) -> None:
    with pytest.raises(ValueError):
        couch.document_path(doc_id)
