"""A simulated camera: sends images to iot-images and measures the round trip of each."""

from producer.camera import Producer, ProducerReport
from producer.images import SourceImage, cifar10_batches, image_folder

__all__ = ["Producer", "ProducerReport", "SourceImage", "cifar10_batches", "image_folder"]
