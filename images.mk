# Container images (docker/), built with podman on bases made from Debian packages: no image registry needed.
# Included by the Makefile. Tags come from the commit (`make images-tag`); docker/README.md has the details.
VENV ?= .venv
BIN ?= $(VENV)/bin
BUILD_IMAGES := $(BIN)/python docker/build_images.py
# Debian packages the image build uses (podman with runc; mmdebstrap for the bases).
IMAGE_TOOLS := podman runc mmdebstrap
# IMAGES=bridge kafka ... limits a target to those images; empty means all.
IMAGES ?=

.PHONY: images images-save images-verify images-list images-tag images-tools

images-tools:
	@if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null || ! command -v runc >/dev/null; then \
	  echo "installing $(IMAGE_TOOLS) (Debian packages, needs root)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_TOOLS) >/dev/null; \
	fi

images: setup images-tools ## build every image as localhost/iotpipe/<name>:<commit> (IMAGES=... for some)
	$(BUILD_IMAGES) build $(IMAGES)

images-save: images ## write .cache/images/<name>-<tag>.tar (docker-archive, for `ctr images import`)
	$(BUILD_IMAGES) save $(IMAGES)

images-verify: images ## start each image's process once, then remove its container
	$(BUILD_IMAGES) verify $(IMAGES)

images-list: ## each image's reference and size
	@$(BUILD_IMAGES) list $(IMAGES)

images-tag: ## the tag of this working tree
	@$(BUILD_IMAGES) tag
