# Every target that produces something names a real file, so Make redoes only what is out of date.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where runs/, site_assets/, docs/ and site/ live; tests point it at a temporary folder.
ROOT ?= .
export PIPELINE_ROOT := $(abspath $(ROOT))
# A local CIFAR-10 archive; by default the copy beside this checkout, if there is one.
CIFAR10_ARCHIVE ?= $(wildcard $(abspath ../shared/data/cifar-10-python.tar.gz))
export CIFAR10_ARCHIVE
PROFILE ?= full
CLS_ARGS ?=
MT_ARGS ?=

INSTALLED := $(VENV)/.installed
CLS_RUN := $(ROOT)/runs/cls/final.json
MT_RUN := $(ROOT)/runs/mt/final.json

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: $(INSTALLED) ## create .venv and install the project with its dependencies

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

train: $(CLS_RUN) $(MT_RUN) ## train both models (resumes an interrupted run)

train-cls: $(CLS_RUN) ## train ResNet-18 on CIFAR-10 (PROFILE=smoke for seconds; CLS_ARGS="--epochs 3")

train-mt: $(MT_RUN) ## train the Transformer on toy French->English (MT_ARGS="--epochs 5")

$(CLS_RUN): $(INSTALLED)
	$(PY) -m pipeline train cls --resume --profile $(PROFILE) $(CLS_ARGS)

$(MT_RUN): $(INSTALLED)
	$(PY) -m pipeline train mt --resume --profile $(PROFILE) $(MT_ARGS)

bench-cls: $(INSTALLED) ## train the default ResNet run, print its table, time a plain fp32 baseline beside it
	$(PY) -m pipeline bench cls $(CLS_ARGS)

bench-mt: $(INSTALLED) ## train the default Transformer run and print its table and test scores
	$(PY) -m pipeline bench mt $(MT_ARGS)

test: $(INSTALLED) ## run the test suite (fast, CPU, no real data)
	$(PY) -m pytest -q

clean: ## remove runs, generated assets and the built site (keeps .venv and data)
	rm -rf $(ROOT)/runs $(ROOT)/site

.PHONY: help setup train train-cls train-mt bench-cls bench-mt test clean
