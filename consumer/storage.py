"""Stores every prediction in CouchDB with its image, in bulk, exactly one document per image.

The ``StorageService`` runs the ``Storage`` handler over the shared processing loop (iotpipe.processing).
Each poll of ``iot-predictions`` becomes one ``_bulk_docs`` request. The document id is the image
id, so a result delivered twice (after a crash before the commit) meets the stored document and
stays as it is; the same id with a *different* image is a conflict and is dead-lettered, as is a
record that is not a valid prediction or a document CouchDB refuses. CouchDB outages are waited
out; a bulk write refused as a whole is split until the refused document is found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from iotpipe import couch
from iotpipe.config import Config
from iotpipe.processing import BatchFailed, Failure, Item, Outage, Processed, Service, export_metrics
from iotpipe.service import serve_metrics
from iotpipe.wire import Prediction, parse_time

log = logging.getLogger("iotpipe.consumer")

DOCUMENTS = Counter("iotpipe_consumer_documents", "Results taken from iot-predictions, by outcome", ["outcome"])
for outcome in ("stored", "already_stored", "dead_letter"):
    DOCUMENTS.labels(outcome)  # exported as 0 before the first one
WRITE_SECONDS = Histogram(
    "iotpipe_consumer_write_seconds",
    "CouchDB _bulk_docs round trip",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
END_TO_END_SECONDS = Histogram(
    "iotpipe_end_to_end_seconds",
    "From the camera's ce_time to the result stored in CouchDB",
    buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10),
)
LAG = Gauge("iotpipe_consumer_lag", "Records not yet taken from iot-predictions")
export_metrics("consumer", "store", dependencies=["CouchDB"])
SETTLED = (couch.Outcome.STORED, couch.Outcome.ALREADY_STORED)


class StorageService(Service):
    """``iotpipe consumer``: iot-predictions -> CouchDB until ``stopping`` is set."""

    def run(self) -> None:
        config = self.config
        serve_metrics(config.consumer_metrics_port, config.metrics_bind_address)
        log.info("consumer storing %s into %s", config.predictions_topic, config.couchdb_database)
        dead_lettered = DOCUMENTS.labels("dead_letter").inc
        self.serve(config.predictions_topic, config.consumer_group_id, Storage(config), LAG, dead_lettered)


class Storage:
    """The consumer's handler: predictions in, one CouchDB document per image out."""

    service = "consumer"
    stage = "store"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dead_letter_topic = config.predictions_dead_letter_topic
        self.output_topics = ()
        self.db = couch.Database(config)

    def decode(self, record: ConsumerRecord) -> Prediction:
        return Prediction.from_record(record.value, record.headers)

    def process(self, items: Sequence[Item[Prediction]]) -> Processed:
        documents = [couch.document_for(item.value) for item in items]
        try:
            with WRITE_SECONDS.time():
                outcomes = couch.save_all(self.db, documents)
        except couch.CouchUnavailable as error:
            raise Outage("CouchDB", str(error)) from None
        except couch.CouchRefused as error:
            raise BatchFailed(f"CouchDB refused the bulk write ({error.status}): {error}") from None
        stored = time.time()
        processed = Processed()
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.outcome in SETTLED:
                DOCUMENTS.labels(outcome.outcome).inc()
                if outcome.outcome == couch.Outcome.STORED:
                    END_TO_END_SECONDS.observe(stored - parse_time(item.value.sent_at))
            else:
                reason = f"CouchDB {outcome.outcome}: {outcome.reason}"
                processed.failures.append(Failure(item.record, reason, f"{self.service}:{self.stage}"))
        return processed

    def check(self) -> None:
        """CouchDB answers, with the results database there (made where missing, e.g. after a purge).

        An existing database is only read: in a cluster the consumer's user is scoped to it and may
        not change its security or design documents.
        """
        try:
            if not self.db.exists():
                couch.database(self.config, create=True)
        except couch.CouchError as error:
            raise Outage("CouchDB", str(error)) from None

    def warm_up(self) -> None:
        """``check`` opens the session (and its connection) that the first bulk write uses."""
        self.check()
