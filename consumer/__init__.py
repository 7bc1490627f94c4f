"""The consumer: iot-predictions -> CouchDB, one document per image."""

from consumer.couchdb_writer import Consumer

__all__ = ["Consumer"]
