"""CouchDB over its documented HTTP API: the document of one result, and idempotent bulk writes.

``database(config)`` is a small client over ``requests`` (Apache CouchDB and PouchDB Server are
interchangeable): one session per thread, the credentials as HTTP basic auth (never in a URL),
and a timeout of ``config.couchdb_timeout_s`` on every request. A failure has a class that
tells the caller what to do:

- ``CouchUnavailable``: an outage (no answer, a timeout, credentials refused, the database gone,
  the server busy or unhealthy); wait it out and try again.
- ``CouchRefused``: the server is up and refused the whole request for what it holds; one of
  the documents is the culprit, so split the batch to find it.

``save_all`` returns one ``WriteOutcome`` per document, in order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from iotpipe.config import Config, SecretStr
from iotpipe.wire import RESULT_FIELDS, Prediction, check_id, cut, now_iso

IMAGE_ATTACHMENT = "image"
DIGEST_FIELD = "image_digest"
# A stored document's fields besides its attachment: the prediction's result (its id as "_id"),
# when it was stored, and its image's digest.
DOCUMENT_FIELDS = ["_id" if name == "id" else name for name in RESULT_FIELDS] + ["stored_at", DIGEST_FIELD]
PROBE_TIMEOUT_S = 2.0  # the health probe that tells a sick server from a refused request
# A Mango index on producer_id, for results_of.
BY_PRODUCER_INDEX = {"index": {"fields": ["producer_id"]}, "ddoc": "by-producer", "name": "by-producer"}
# A view counts, per model version and producer, the images and how many were labelled right.
DESIGN = {
    "_id": "_design/iotpipe",
    "language": "javascript",
    "views": {
        "accuracy": {
            "map": (
                "function (doc) { if (doc.model_version && doc.ground_truth) "
                "{ emit([doc.model_version, doc.producer_id], doc.label === doc.ground_truth ? 1 : 0); } }"
            ),
            "reduce": "_stats",
        }
    },
}


class CouchError(RuntimeError):
    """A CouchDB request failed; the subclass says what the caller should do."""


class CouchUnavailable(CouchError):
    """An outage: CouchDB does not answer, or cannot serve anyone right now. Wait it out."""


class CouchRefused(CouchError):
    """CouchDB is up and refused the whole request because of its content (``status``: the HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Outcome(StrEnum):
    """What became of one document of a bulk write."""

    STORED = "stored"
    ALREADY_STORED = "already_stored"  # an earlier delivery of the same image is stored
    CONFLICT = "conflict"  # another image is stored under the same id
    REFUSED = "refused"  # CouchDB refused this document (its error and reason in ``reason``)


@dataclass(frozen=True)
class WriteOutcome:
    id: str
    outcome: str
    reason: str = ""


def image_digest(image: bytes) -> str:
    """What tells two images apart: ``sha256:<hex>`` of the raw bytes."""
    return f"sha256:{hashlib.sha256(image).hexdigest()}"


def document_for(prediction: Prediction, stored_at: str | None = None) -> dict:
    """The CouchDB document of one image (``DOCUMENT_FIELDS``), with the image as attachment ``image``."""
    result = prediction.result()
    return {
        "_id": result.pop("id"),
        **result,
        "stored_at": stored_at or now_iso(),
        DIGEST_FIELD: image_digest(prediction.image),
        "_attachments": {
            IMAGE_ATTACHMENT: {
                "content_type": prediction.content_type,
                "data": base64.b64encode(prediction.image).decode(),
            }
        },
    }


def document_path(doc_id: str) -> str:
    """The URL path segment of one ordinary document: its id, checked and quoted whole, so that it names nothing else.

    ValueError (a ``WireError``) for an id that could address something else: a design or system
    document (``_``), a path (``/``, dot segments), control characters.
    """
    return quote(check_id(doc_id, "document id"), safe="")


class Database:
    """One CouchDB database. Thread-safe: each thread has its own ``requests.Session``."""

    def __init__(self, config: Config) -> None:
        self.name = config.couchdb_database
        self.server_url = config.couchdb_url.rstrip("/")
        self.url = f"{self.server_url}/{quote(self.name, safe='')}"
        self.timeout_s = config.couchdb_timeout_s
        self._credentials = config.couchdb_credentials
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Database({self.name!r} at {self.where})"

    @property
    def where(self) -> str:
        """The server's address for messages: without any user or password written into the URL."""
        parts = urlsplit(self.server_url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    # -- reads

    def info(self) -> dict:
        return self._json("GET", "")

    def all_docs(self, **params: object) -> list[dict]:
        """Rows of ``_all_docs``; ``params`` as CouchDB documents them (JSON values: ``startkey="a"``)."""
        return self._json("GET", "_all_docs", "rows", params=params)

    def documents(self, ids: list[str]) -> dict[str, dict]:
        """The stored documents among ``ids`` (attachments as stubs), by id, in one request."""
        rows = self._json("POST", "_all_docs", "rows", params={"include_docs": True}, body={"keys": ids})
        return {row["id"]: row["doc"] for row in rows if row.get("doc")}

    def find(self, query: dict) -> list[dict]:
        """The documents a Mango query selects."""
        return self._json("POST", "_find", "docs", body=query)

    def view(self, name: str, **params: object) -> list[dict]:
        """Rows of view ``design/view``."""
        design, view = (quote(part, safe="") for part in name.split("/"))
        return self._json("GET", f"_design/{design}/_view/{view}", "rows", params=params)

    def attachment(self, doc_id: str, name: str = IMAGE_ATTACHMENT) -> tuple[bytes, str] | None:
        """(bytes, content type as CouchDB says) of one attachment of one document; None if there is none."""
        try:
            response = self._call("GET", f"{document_path(doc_id)}/{quote(name, safe='')}")
        except CouchRefused as error:
            if error.status == 404:
                return None
            raise
        return response.content, response.headers.get("Content-Type", "")

    # -- writes

    def bulk_docs(self, documents: list[dict]) -> list[dict]:
        """CouchDB's answer for each document of one ``_bulk_docs`` request, in order."""
        results = self._json("POST", "_bulk_docs", body={"docs": documents})
        if not isinstance(results, list) or len(results) != len(documents):
            raise CouchUnavailable(
                f"CouchDB at {self.where} answered _bulk_docs of {len(documents)} documents with {results!r:.200}"
            )
        return results

    def exists(self) -> bool:
        """Whether the database exists; an outage raises CouchUnavailable."""
        try:
            self._call("HEAD", "")
        except CouchUnavailable:
            if self._answers(self.server_url + "/", "GET"):  # the server answers: the database is missing
                return False
            raise
        return True

    def create(self) -> None:
        """Create the database where missing (asking first: a user scoped to the database may not PUT it)."""
        if self.exists():
            return
        try:
            self._call("PUT", "")
        except CouchRefused as error:
            if error.status != 412:  # made meanwhile
                raise

    def restrict_to(self, user: str) -> None:
        """Only ``user`` and admins may read or write: no anonymous access."""
        members = {"names": [user], "roles": ["_admin"]}
        self._call("PUT", "_security", body={"admins": members, "members": members})

    def create_index(self, index: dict) -> None:
        """A Mango index (``POST _index`` keeps an existing one)."""
        self._call("POST", "_index", body=index)

    def add(self, document: dict) -> None:
        """Store ``document`` unless a document with its id exists."""
        try:
            self._call("POST", "", body=document)
        except CouchRefused as error:
            if error.status != 409:
                raise

    # -- the server's admins: until it has one, CouchDB is an "admin party" where anyone is admin

    def server_admins(self) -> list[str] | None:
        """The server admins' names; None when the server does not list them to this client.

        It does not once an admin exists and this client is not one (nor does a CouchDB whose
        configuration lives elsewhere than ``/_config``).
        """
        response = self._send("GET", f"{self.server_url}/_config/admins", "GET _config/admins")
        return list(self._answer(response, "GET _config/admins")) if response.ok else None

    def add_server_admin(self, user: str, password: SecretStr) -> None:
        """Make ``user`` a server admin with ``password`` (anyone may, during the admin party)."""
        what = f"PUT _config/admins/{user}"
        url = f"{self.server_url}/_config/admins/{quote(user, safe='')}"
        response = self._send("PUT", url, what, body=password.get_secret_value())
        if not response.ok:
            raise self._failure(response, what)

    def is_server_admin(self) -> bool:
        """Whether CouchDB takes this client's credentials for a server admin's (its ``_session``)."""
        response = self._send("GET", f"{self.server_url}/_session", "GET _session")
        if not response.ok:  # 401: a wrong password, or a user that does not exist
            return False
        return "_admin" in self._answer(response, "GET _session").get("userCtx", {}).get("roles", [])

    # -- HTTP, and what each failure means

    def _json(self, method: str, path: str, field: str | None = None, **request) -> Any:
        """The JSON answer, or its ``field``, of a request to the database."""
        response = self._call(method, path, **request)
        return self._answer(response, f"{method} {self.name}/{path}", field)

    def _answer(self, response: requests.Response, what: str, field: str | None = None) -> Any:
        """The JSON of a successful answer, or its ``field``; anything but CouchDB's JSON answering: an outage."""
        if not response.ok:
            raise self._failure(response, what)
        try:
            body = response.json()
            return body if field is None else body[field]
        except (ValueError, KeyError, TypeError):
            raise CouchUnavailable(
                f"CouchDB at {self.where} answered {what} with {cut(response.text, 200)!r}, "
                "not CouchDB's JSON; is something else listening there?"
            ) from None

    def _call(
        self, method: str, path: str, *, params: dict | None = None, body: dict | None = None
    ) -> requests.Response:
        """The successful answer of a request to the database (``path`` within it)."""
        what = f"{method} {self.name}/{path}".rstrip("/")
        response = self._send(method, f"{self.url}/{path}" if path else self.url, what, params=params, body=body)
        if response.ok:
            return response
        raise self._failure(response, what)

    def _send(
        self, method: str, url: str, what: str, *, params: dict | None = None, body: dict | str | None = None
    ) -> requests.Response:
        """CouchDB's answer, whatever its status; CouchUnavailable when none comes."""
        query = {name: json.dumps(value) for name, value in (params or {}).items()}  # CouchDB's are JSON
        try:
            return self._session().request(method, url, params=query, json=body, timeout=self.timeout_s)
        except requests.Timeout:
            raise CouchUnavailable(self._outage(f"no answer in {self.timeout_s:g} s to {what}")) from None
        except requests.RequestException as error:
            raise CouchUnavailable(self._outage(f"{what} failed ({type(error).__name__})")) from None

    def _failure(self, response: requests.Response, what: str) -> CouchError:
        status = response.status_code
        detail = f"{what}: HTTP {status} {_error_of(response)}"
        if status in (401, 403):
            return CouchUnavailable(
                f"CouchDB at {self.where} refused the credentials ({detail}); check IOTPIPE_COUCHDB_USER and "
                "IOTPIPE_COUCHDB_PASSWORD (or the password file) and the database's _security"
            )
        if status in (408, 429):
            return CouchUnavailable(self._outage(f"too busy ({detail})"))
        if status == 404 and not self._answers(self.url, "HEAD"):
            return CouchUnavailable(
                f"CouchDB at {self.where} has no database {self.name} ({detail}); `iotpipe up` creates it"
            )
        if status >= 500 and not self._answers(self.server_url + "/", "GET"):
            return CouchUnavailable(self._outage(f"failing and not answering GET / ({detail})"))
        return CouchRefused(status, f"CouchDB at {self.where} refused {detail}")

    def _answers(self, url: str, method: str) -> bool:
        try:
            return self._session().request(method, url, timeout=min(PROBE_TIMEOUT_S, self.timeout_s)).ok
        except requests.RequestException:
            return False

    def _outage(self, what: str) -> str:
        return f"CouchDB at {self.where}: {what}; is it up (`iotpipe status`, its log in .run/logs/couchdb.log)?"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self._credentials
        return session


def _error_of(response: requests.Response) -> str:
    """CouchDB's ``error: reason``, or the start of whatever else answered."""
    try:
        body = response.json()
        return cut(f"{body['error']}: {body.get('reason', '')}", 300)
    except (ValueError, KeyError, TypeError):
        return cut(response.text, 300)


def database(config: Config, create: bool = False) -> Database:
    """The results database; ``create`` makes it, its security, its Mango index and its views where missing.

    Without ``create`` nothing is sent until the first call.
    """
    db = Database(config)
    if create:
        db.create()
        if config.couchdb_credentials:
            db.restrict_to(config.couchdb_user)
        db.create_index(BY_PRODUCER_INDEX)
        db.add(DESIGN)
    return db


def accuracy_by_version(db: Database, producer_id: str | None = None) -> dict[str, tuple[int, int]]:
    """(images, correct) per model version, over all images with a ground truth (or one producer's)."""
    totals: dict[str, tuple[int, int]] = {}
    for row in db.view("iotpipe/accuracy", group=True):
        version, producer = row["key"]
        if producer_id is None or producer == producer_id:
            count, correct = totals.get(version, (0, 0))
            totals[version] = (count + int(row["value"]["count"]), correct + int(row["value"]["sum"]))
    return totals


def results_of(db: Database, producer_id: str, fields: list[str] | None = None) -> list[dict]:
    """Every stored result of one producer (a Mango query on ``producer_id``)."""
    query: dict = {"selector": {"producer_id": producer_id}, "limit": 1_000_000}
    if fields:
        query["fields"] = fields
    return db.find(query)


def save_all(db: Database, documents: list[dict]) -> list[WriteOutcome]:
    """Write ``documents`` (from ``document_for``) in one bulk request: one outcome per document, in order.

    A conflict means a document is stored under that id already. Results are delivered again
    after a crash, so the same image there is ``already_stored`` (the write is idempotent); a
    different image is a ``conflict``, never dropped in silence.
    """
    if not documents:
        return []
    results = db.bulk_docs(documents)
    conflicting = [result.get("id") for result in results if result.get("error") == "conflict"]
    stored = db.documents(conflicting) if conflicting else {}
    return [_outcome(document, result, stored) for document, result in zip(documents, results, strict=True)]


def _outcome(document: dict, result: dict, stored: dict[str, dict]) -> WriteOutcome:
    doc_id = document["_id"]
    error = result.get("error")
    if error is None:
        return WriteOutcome(doc_id, Outcome.STORED)
    if error != "conflict":
        return WriteOutcome(
            doc_id, Outcome.REFUSED, cut(f"CouchDB refused the document: {error}: {result.get('reason')}")
        )
    if doc_id not in stored:
        return WriteOutcome(doc_id, Outcome.REFUSED, "CouchDB reported a conflict but holds no document under this id")
    new, old = document[DIGEST_FIELD], stored[doc_id].get(DIGEST_FIELD, "no digest")
    if new == old:
        return WriteOutcome(doc_id, Outcome.ALREADY_STORED)
    return WriteOutcome(
        doc_id, Outcome.CONFLICT, cut(f"another image is stored under this id: stored {old}, this one {new}")
    )
