"""The consumer: iot-predictions -> CouchDB, one document per image."""

from consumer.storage import StorageService

__all__ = ["StorageService"]
