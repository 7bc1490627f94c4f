"""CouchDB helpers: the document of one result, and idempotent bulk writes over the HTTP API.

Only CouchDB's documented HTTP API is used (through the ``couchdb`` package), so Apache
CouchDB and PouchDB Server are interchangeable.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import couchdb

from iotpipe.config import Config
from iotpipe.wire import Prediction, now_iso


def document_for(prediction: Prediction, stored_at: str | None = None) -> dict:
    """The CouchDB document of one image: its result, with the image as attachment ``image``."""
    return {
        "_id": prediction.id,
        "producer_id": prediction.producer_id,
        "subject": prediction.subject,
        "ground_truth": prediction.ground_truth,
        "label": prediction.label,
        "scores": prediction.scores,
        "model": prediction.model,
        "model_version": prediction.model_version,
        "sent_at": prediction.sent_at,
        "received_at": prediction.received_at,
        "inferred_at": prediction.inferred_at,
        "stored_at": stored_at or now_iso(),
        "_attachments": {
            "image": {
                "content_type": prediction.content_type,
                "data": base64.b64encode(prediction.image).decode(),
            }
        },
    }


@dataclass
class WriteReport:
    written: int = 0
    already_stored: int = 0


def server(config: Config) -> couchdb.Server:
    url = config.couchdb_url
    if config.couchdb_credentials:
        parts = urlsplit(url)
        user, password = config.couchdb_credentials
        url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))
    return couchdb.Server(url)


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


def database(config: Config, create: bool = False) -> couchdb.Database:
    """The results database; ``create`` makes it, its Mango index and its views where missing."""
    couch = server(config)
    if create and config.couchdb_database not in couch:
        with contextlib.suppress(couchdb.PreconditionFailed):
            couch.create(config.couchdb_database)
    db = couch[config.couchdb_database]
    if create and config.couchdb_credentials:
        members = {"names": [config.couchdb_user], "roles": ["_admin"]}
        db.security = {"admins": members, "members": members}  # no anonymous reads or writes
    if create and DESIGN["_id"] not in db:
        db.index()["by-producer", "by-producer"] = ["producer_id"]
        with contextlib.suppress(couchdb.ResourceConflict):
            db.save(dict(DESIGN))
    return db


def accuracy_by_version(db: couchdb.Database, producer_id: str | None = None) -> dict[str, tuple[int, int]]:
    """(images, correct) per model version, over all images with a ground truth (or one producer's)."""
    totals: dict[str, tuple[int, int]] = {}
    for row in db.view("iotpipe/accuracy", group=True):
        version, producer = row.key
        if producer_id is None or producer == producer_id:
            count, correct = totals.get(version, (0, 0))
            totals[version] = (count + int(row.value["count"]), correct + int(row.value["sum"]))
    return totals


def results_of(db: couchdb.Database, producer_id: str, fields: list[str] | None = None) -> list[dict]:
    """Every stored result of one producer (a Mango query on ``producer_id``)."""
    query: dict = {"selector": {"producer_id": producer_id}, "limit": 1_000_000}
    if fields:
        query["fields"] = fields
    return [dict(document) for document in db.find(query)]


def save_all(db: couchdb.Database, documents: Iterable[dict]) -> WriteReport:
    """Write documents in one bulk request; a document already stored under its id is kept as is.

    A conflict means an earlier delivery of the same result was stored (results are
    redelivered after a crash), so the write is idempotent: one document per image id.
    """
    report = WriteReport()
    for ok, doc_id, outcome in db.update(list(documents)):
        if ok:
            report.written += 1
        elif isinstance(outcome, couchdb.ResourceConflict):
            report.already_stored += 1
        else:
            raise RuntimeError(f"CouchDB refused document {doc_id}: {outcome}")
    return report
