"""Simulated cameras: send images to iot-images and measure the round trip of each."""

from producer.camera import Producer
from producer.fleet import Camera, Fleet, ProducerReport
from producer.images import SourceImage, cifar10_batches, image_folder

__all__ = ["Camera", "Fleet", "Producer", "ProducerReport", "SourceImage", "cifar10_batches", "image_folder"]
