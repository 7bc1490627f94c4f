"""Stores every prediction in CouchDB with its image, in bulk, exactly one document per image.

Each poll of ``iot-predictions`` becomes one ``_bulk_docs`` request. The document id is the
image id, so a result delivered twice (after a crash before the commit) meets a conflict and
the stored document stays as it is. Offsets are committed after CouchDB has answered. A record
that is not a valid prediction goes to ``iot-predictions-dlq`` with the reason in a header.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import couchdb
import requests
from prometheus_client import Counter, Gauge, Histogram

from iotpipe import couch, kafka
from iotpipe.config import Config
from iotpipe.service import retry_until_done, serve_metrics
from iotpipe.wire import Prediction, WireError, dead_letter_headers, parse_time

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


class Consumer:
    def __init__(self, config: Config, ready_file: Path | None = None) -> None:
        self.config = config
        self.ready_file = ready_file
        self.stopping = threading.Event()

    def run(self) -> None:
        serve_metrics(self.config.consumer_metrics_port, self.config.metrics_bind_address)
        db = couch.database(self.config, create=True)
        consumer = kafka.consumer(self.config, self.config.predictions_topic, group_id=self.config.consumer_group_id)
        producer = kafka.producer(self.config)
        log.info("consumer storing %s into %s", self.config.predictions_topic, self.config.couchdb_database)
        try:
            kafka.process_batches(
                consumer,
                lambda records: self._store(records, db, producer),
                self.stopping,
                ready_file=self.ready_file,
                lag=LAG,
            )
        finally:
            producer.close()
            consumer.close()

    def _store(self, records, db: couchdb.Database, producer) -> None:
        predictions, documents, dead_letters = [], [], []
        for record in records:
            try:
                predictions.append(Prediction.from_value(record.value))
                documents.append(couch.document_for(predictions[-1]))
            except WireError as error:
                log.warning("dead letter: %s", error)
                headers = dead_letter_headers(record.headers, str(error))
                dead_letters.append((self.config.predictions_dead_letter_topic, record.key, record.value, headers))
        with WRITE_SECONDS.time():
            report = retry_until_done(
                lambda: couch.save_all(db, documents) if documents else couch.WriteReport(),
                (OSError, requests.RequestException, couchdb.ServerError),
                self.stopping,
                log,
            )
        stored = time.time()
        for prediction in predictions:
            END_TO_END_SECONDS.observe(stored - parse_time(prediction.sent_at))
        kafka.send_all(producer, dead_letters)
        DOCUMENTS.labels("dead_letter").inc(len(dead_letters))
        DOCUMENTS.labels("stored").inc(report.written)
        DOCUMENTS.labels("already_stored").inc(report.already_stored)
