"""Stores every prediction in CouchDB with its image, in bulk, exactly one document per image.

Each poll of ``iot-predictions`` becomes one ``_bulk_docs`` request. The document id is the
image id, so a result delivered twice (after a crash before the commit) meets a conflict and
the stored document stays as it is. Offsets are committed after CouchDB has answered. A record
that is not a valid prediction goes to ``iot-predictions-dlq`` with the reason in a header.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import couchdb
import requests

from iotpipe import couch, kafka
from iotpipe.config import Config
from iotpipe.service import retry_until_done
from iotpipe.wire import Prediction, WireError, dead_letter_headers

log = logging.getLogger("iotpipe.consumer")


class Consumer:
    def __init__(self, config: Config, ready_file: Path | None = None) -> None:
        self.config = config
        self.ready_file = ready_file
        self.stopping = threading.Event()
        self.counts = {"stored": 0, "already_stored": 0, "dead_letters": 0}

    def run(self) -> None:
        db = couch.database(self.config, create=True)
        consumer = kafka.consumer(self.config, self.config.predictions_topic, group_id=self.config.consumer_group_id)
        producer = kafka.producer(self.config)
        log.info("consumer storing %s into %s", self.config.predictions_topic, self.config.couchdb_database)
        try:
            kafka.process_batches(
                consumer, lambda records: self._store(records, db, producer), self.stopping, self.ready_file
            )
        finally:
            producer.close()
            consumer.close()

    def _store(self, records, db: couchdb.Database, producer) -> None:
        documents = []
        for record in records:
            try:
                documents.append(couch.document_for(Prediction.from_value(record.value)))
            except WireError as error:
                log.warning("dead letter: %s", error)
                headers = dead_letter_headers(record.headers, str(error))
                producer.send(
                    self.config.predictions_dead_letter_topic, key=record.key, value=record.value, headers=headers
                )
                self.counts["dead_letters"] += 1
        report = retry_until_done(
            lambda: couch.save_all(db, documents),
            (OSError, requests.RequestException, couchdb.ServerError),
            self.stopping,
            log,
        )
        producer.flush()
        self.counts["stored"] += report.written
        self.counts["already_stored"] += report.already_stored
