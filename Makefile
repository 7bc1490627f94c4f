# Two commands for a fresh clone: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)

# Assets come from configuration; default to ../shared where that exists.
ifneq ($(wildcard $(SHARED)/models/resnet-cifar10),)
export IOTPIPE_MODELS_DIR ?= $(SHARED)/models/resnet-cifar10
endif
ifneq ($(wildcard $(SHARED)/data/cifar10-jpeg/test),)
export IOTPIPE_DATA_DIR ?= $(SHARED)/data/cifar10-jpeg/test
endif

.PHONY: help setup system-packages up down status demo test lint models dashboard certs

include deploy.mk
include images.mk
include cluster.mk

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: system-packages $(VENV)/.installed stack/kafka/lib/.installed stack/couchdb/node_modules/.installed deploy-setup ## install everything the stack and the tests need

# Debian packages: Chromium and its driver for the dashboard's browser test.
SYSTEM_PACKAGES := chromium chromium-driver
system-packages:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing $(SYSTEM_PACKAGES) (Debian packages, needs root)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,mlserver]'
	touch $@

stack/kafka/lib/.installed: stack/kafka/pom.xml
	mvn --quiet --batch-mode -f stack/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=lib
	touch $@

stack/couchdb/node_modules/.installed: stack/couchdb/package.json stack/couchdb/package-lock.json
	npm ci --prefix stack/couchdb --no-audit --no-fund --loglevel=error
	touch $@

certs: setup ## the test CA and the broker's TLS key store for the SASL_SSL listener (.run/kafka/tls, not committed)
	$(BIN)/python -m stack.tls .run/kafka/tls

models: setup ## build the .mar archives of every shipped ResNet into model-store/
	$(BIN)/iotpipe models build

up: setup ## start the embedded stack in the background
	$(BIN)/iotpipe up

down: ## stop the embedded stack (data kept)
	$(BIN)/iotpipe down

status: ## show each component
	$(BIN)/iotpipe status

demo: setup ## start the stack, run 1..5 producers, print the latency table, stop
	$(BIN)/iotpipe up
	$(BIN)/iotpipe loadtest --producers 1,2,3,4,5 --rate 5 --count 60 --out results/demo; \
	  status=$$?; $(BIN)/iotpipe down; exit $$status

test: setup ## run the unit and integration tests (they start and stop their own stack)
	$(BIN)/pytest -ra

lint: setup ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
