"""What the dashboard shows, read from CouchDB's HTTP API and the services' metrics.

CouchDB holds the truth about stored images: how many (``doc_count``), the latest ones (a Mango
query sorted on ``stored_at``, with its index), their end-to-end latency (``stored_at -
sent_at``), and accuracy per model version (the ``iotpipe/accuracy`` view of iotpipe.couch).
The metrics pages add what only the services know: lag and dead letters. Anything that does
not answer reads as None ("n/a" on the page); nothing here raises for an outage.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import numpy as np

from dashboard.metrics import Scrape, scrape, total
from iotpipe import couch
from iotpipe.config import Config
from iotpipe.couch import CouchError, CouchRefused
from iotpipe.wire import parse_time

LATEST = 12  # images on the page
LATENCY_WINDOW_S = 60.0  # latency percentiles over the documents stored this recently...
LATENCY_SAMPLE = 300  # ...at most this many of them, the latest
THROUGHPUT_WINDOW_S = 5.0  # images stored per second, over about this long
# PouchDB Server reduces a view at query time, over every row: a database of 100k images takes
# seconds. The accuracy is read again after ACCURACY_EVERY_S, or after ten times the last
# query's duration if longer, so that it costs CouchDB at most a tenth of one core.
ACCURACY_EVERY_S = 5.0
COUCHDB_TIMEOUT_S = 5.0  # at most: a page that says "n/a" soon beats one that waits
METRICS_TIMEOUT_S = 1.0

# The Mango index that sorting on stored_at needs, created in the results database on first use.
STORED_AT_INDEX = {
    "index": {"fields": ["stored_at"]},
    "ddoc": "dashboard-stored-at",
    "name": "by-stored-at",
    "type": "json",
}


class Readings:
    """Thread-safe: the dashboard's HTTP server calls it from one thread per request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = couch.database(config.replace(couchdb_timeout_s=min(config.couchdb_timeout_s, COUCHDB_TIMEOUT_S)))
        self.bridge_metrics_url = f"http://127.0.0.1:{config.bridge_metrics_port}/metrics"
        self.consumer_metrics_url = f"http://127.0.0.1:{config.consumer_metrics_port}/metrics"
        self._lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._index_ready = False
        self._stored: deque[tuple[float, int]] = deque()  # (monotonic time, images stored) samples
        self._accuracy_lock = threading.Lock()
        self._accuracy: dict | None = None
        self._accuracy_due = 0.0

    # -- the page's three JSON endpoints

    def stats(self) -> dict:
        """Throughput, stored count, latency percentiles, lag and dead letters; None where unknown."""
        bridge = scrape(self.bridge_metrics_url, METRICS_TIMEOUT_S)
        consumer = scrape(self.consumer_metrics_url, METRICS_TIMEOUT_S)
        stored = latency = None
        couchdb_error = None
        try:
            stored = self.stored_count()
            latency = self.latency()
        except CouchError as error:
            couchdb_error = str(error)
        return {
            "database": self.config.couchdb_database,
            "stored": stored,
            "throughput": self.throughput(stored),
            "throughput_window_s": THROUGHPUT_WINDOW_S,
            "latency": latency,
            "couchdb_error": couchdb_error,
            "lag": _lag(bridge, consumer),
            "dead_letters": _dead_letters(bridge, consumer),
            "bridge": _bridge(bridge),
            "consumer": _consumer(consumer),
        }

    def latest(self, limit: int = LATEST) -> dict:
        """The last ``limit`` stored images, newest first, with their labels and latency."""
        try:
            documents = self._find({"stored_at": {"$gt": None}}, limit, couch.DOCUMENT_FIELDS)
        except CouchError as error:
            return {"images": None, "couchdb_error": str(error)}
        return {"images": [_image(document) for document in documents], "couchdb_error": None}

    def accuracy(self) -> dict:
        """Share of stored images whose label is their ground truth, per model version.

        One query at a time, its answer reused until it is due again (see ACCURACY_EVERY_S);
        a request that finds a query running gets the last answer rather than waiting.
        """
        if not self._accuracy_lock.acquire(timeout=1.0):
            return self._accuracy or {"versions": None, "as_of": None, "couchdb_error": "accuracy: query running"}
        try:
            if self._accuracy is not None and time.monotonic() < self._accuracy_due:
                return self._accuracy
            started = time.monotonic()
            try:
                totals = couch.accuracy_by_version(self.db)
            except CouchError as error:
                return {"versions": None, "as_of": None, "couchdb_error": str(error)}
            finished = time.monotonic()
            versions = accuracy_table(totals, self.config.model_name)
            self._accuracy = {"versions": versions, "as_of": iso(datetime.now(UTC)), "couchdb_error": None}
            self._accuracy_due = finished + max(ACCURACY_EVERY_S, 10 * (finished - started))
            return self._accuracy
        finally:
            self._accuracy_lock.release()

    def image(self, image_id: str) -> tuple[bytes, str] | None:
        """(bytes, content type as CouchDB says) of an image's attachment, or None if there is none.

        ValueError for an id that could address anything but one ordinary document.
        """
        return self.db.attachment(image_id)

    # -- the numbers

    def stored_count(self) -> int:
        """Documents in the results database, design documents (indexes, views) left out."""
        design = self.db.all_docs(startkey="_design/", endkey="_design0")
        return int(self.db.info()["doc_count"]) - len(design)

    def throughput(self, stored: int | None, now: float | None = None) -> float | None:
        """Images stored per second over the last ~THROUGHPUT_WINDOW_S, from the counts seen so far."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if stored is not None:
                self._stored.append((now, stored))
            return stored_per_second(self._stored, now, THROUGHPUT_WINDOW_S)

    def latency(self) -> dict:
        """p50 and p95 of stored_at - sent_at over the latest documents stored in the last minute."""
        since = iso(datetime.now(UTC) - timedelta(seconds=LATENCY_WINDOW_S))
        documents = self._find({"stored_at": {"$gt": since}}, LATENCY_SAMPLE, ["sent_at", "stored_at"])
        return latency_summary(documents, LATENCY_WINDOW_S)

    # -- CouchDB's Mango queries

    def _find(self, selector: dict, limit: int, fields: list[str]) -> list[dict]:
        self._ensure_index()
        query = {"selector": selector, "sort": [{"stored_at": "desc"}], "limit": limit, "fields": fields}
        try:
            return self.db.find(query)
        except CouchRefused:
            self._index_ready = False  # a database created anew has lost its index: make it again
            raise

    def _ensure_index(self) -> None:
        """The Mango index on stored_at, created once (POST _index is idempotent; retried while CouchDB is down)."""
        if self._index_ready:
            return
        with self._setup_lock:
            if not self._index_ready:
                self.db.create_index(STORED_AT_INDEX)
                self._index_ready = True


# -- pure helpers (unit-tested)


def iso(moment: datetime) -> str:
    """The timestamp format of the documents (``...T07:58:27.167323Z``), which sorts as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stored_per_second(samples: deque[tuple[float, int]], now: float, window_s: float) -> float | None:
    """Rate between the latest sample and the newest one at least ``window_s`` older (else the oldest).

    Samples older than needed are dropped from ``samples``. None until two samples half a second apart.
    """
    while len(samples) > 2 and samples[1][0] <= now - window_s:
        samples.popleft()
    if len(samples) < 2:
        return None
    (then, before), (last, after) = samples[0], samples[-1]
    if last - then < 0.5:
        return None
    return max(after - before, 0) / (last - then)


def latency_summary(documents: list[dict], window_s: float) -> dict:
    """p50/p95 of stored_at - sent_at (seconds) of ``documents``; None values when there are none."""
    latencies = [latency for latency in map(end_to_end, documents) if latency is not None]
    if not latencies:
        return {"p50": None, "p95": None, "count": 0, "window_s": window_s}
    p50, p95 = (float(p) for p in np.percentile(np.asarray(latencies), [50, 95]))
    return {"p50": p50, "p95": p95, "count": len(latencies), "window_s": window_s}


def accuracy_table(totals: dict[str, tuple[int, int]], model: str) -> list[dict]:
    """One row per model version, oldest version first, from iotpipe.couch.accuracy_by_version."""
    return [
        {"model": model, "model_version": version, "correct": correct, "total": seen, "accuracy": correct / seen}
        for version, (seen, correct) in sorted(totals.items(), key=lambda item: _version_order(item[0]))
        if seen
    ]


def _version_order(version: str) -> list[tuple[int, int | str]]:
    """Sort key of a version: numeric parts compare as numbers ("20.10" after "20.9")."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in version.split(".")]


def end_to_end(document: dict) -> float | None:
    """stored_at - sent_at in seconds; None for a document without both timestamps."""
    try:
        return parse_time(document["stored_at"]) - parse_time(document["sent_at"])
    except (KeyError, TypeError, ValueError):
        return None


def _image(document: dict) -> dict:
    """One tile of the page: the stored document's fields (``_id`` as ``id``), its image's URL, score and latency."""
    fields = {"id" if name == "_id" else name: document.get(name) for name in couch.DOCUMENT_FIELDS}
    return fields | {
        "url": f"images/{quote(document['_id'], safe='')}",
        "score": (document.get("scores") or {}).get(document.get("label")),
        "latency_s": end_to_end(document),
    }


def _lag(bridge: Scrape | None, consumer: Scrape | None) -> dict:
    bridge_lag = bridge.value("iotpipe_bridge_consumer_lag") if bridge else None
    consumer_lag = consumer.value("iotpipe_consumer_lag") if consumer else None
    return {"bridge": bridge_lag, "consumer": consumer_lag, "total": total([bridge_lag, consumer_lag])}


def _dead_letters(bridge: Scrape | None, consumer: Scrape | None) -> dict:
    from_bridge = bridge.value("iotpipe_bridge_records_total", outcome="dead_letter") if bridge else None
    from_consumer = consumer.value("iotpipe_consumer_documents_total", outcome="dead_letter") if consumer else None
    return {"bridge": from_bridge, "consumer": from_consumer, "total": total([from_bridge, from_consumer])}


def _bridge(bridge: Scrape | None) -> dict | None:
    if bridge is None:
        return None
    return {
        "predicted": bridge.value("iotpipe_bridge_records_total", outcome="predicted"),
        "batch_size_mean": bridge.mean("iotpipe_bridge_batch_size"),
        "inference_s_mean": bridge.mean("iotpipe_bridge_inference_seconds"),
    }


def _consumer(consumer: Scrape | None) -> dict | None:
    if consumer is None:
        return None
    return {
        "stored": consumer.value("iotpipe_consumer_documents_total", outcome="stored"),
        "already_stored": consumer.value("iotpipe_consumer_documents_total", outcome="already_stored"),
        "write_s_mean": consumer.mean("iotpipe_consumer_write_seconds"),
        "end_to_end_s_mean": consumer.mean("iotpipe_end_to_end_seconds"),
    }
