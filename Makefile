# Every target that produces something names a real file, so Make redoes only what is out of date:
# editing a template re-renders the pages without re-evaluating, and nothing retrains unless a run is missing.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
# Make installs into this project's own .venv and nowhere else.
override VENV := .venv
# Tools come from .venv/bin; BIN=/other/bin runs them from an environment that is already set up, and
# then nothing is installed (the tests run the pipeline from the environment pytest runs in).
BIN ?= $(abspath $(VENV))/bin
PY := $(BIN)/python
# Where runs/, site_assets/, docs/ and site/ live; tests point it at a temporary folder.
ROOT ?= .
export PIPELINE_ROOT := $(abspath $(ROOT))
# A local CIFAR-10 archive; by default the copy beside this checkout, if there is one.
CIFAR10_ARCHIVE ?= $(wildcard $(abspath ../shared/data/cifar-10-python.tar.gz))
export CIFAR10_ARCHIVE
export NO_MKDOCS_2_WARNING := 1
PROFILE ?= full
# NPROC=2 trains under torchrun with that many processes (DistributedDataParallel; gloo on the CPU, NCCL on GPUs).
NPROC ?= 1
PIPELINE := $(if $(filter 1,$(NPROC)),$(PY) -m pipeline,$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m pipeline)
CLS_ARGS ?=
MT_ARGS ?=
MKDOCS_BUILD := mkdocs build --strict -f mkdocs.yml

INSTALLED := $(VENV)/.installed
SETUP := $(if $(filter $(abspath $(VENV))/bin,$(BIN)),$(INSTALLED))
# A main run counts as trained in this checkout once its test outputs exist (written when its test set is scored,
# never committed). Its committed metric files alone let a fresh checkout compare and render pages, not evaluate.
CLS_RUN := $(ROOT)/runs/cls/main/test_outputs.npz
MT_RUN := $(ROOT)/runs/mt/main/test_outputs.json
CLS_EVAL := $(ROOT)/site_assets/cls/metrics.json
MT_EVAL := $(ROOT)/site_assets/mt/metrics.json
CLS_FIGURES := $(ROOT)/site_assets/cls/figures.json
MT_FIGURES := $(ROOT)/site_assets/mt/figures.json
EXPERIMENT_RESULTS := $(ROOT)/site_assets/experiments/index.json
EXPERIMENT_FIGURES := $(ROOT)/site_assets/experiments/figures.json
# What the comparison stage reads: every finished run and analysis there is when Make starts.
FINISHED := $(wildcard $(ROOT)/runs/*/*/final.json $(ROOT)/runs/cls/analyses/*.json)
NAMES ?=
# The experiments file (the tests point it at a tiny one).
EXPERIMENTS ?= experiments.yaml
export PIPELINE_EXPERIMENTS := $(abspath $(EXPERIMENTS))
MANIFEST := $(ROOT)/site_assets/manifest.json
PAGES := $(ROOT)/docs/generated/home.md
NOTEBOOKS := $(ROOT)/docs/generated/notebooks/resnet.ipynb
SITE := $(ROOT)/site/index.html
# The hand-written part of docs/ (copied into another ROOT by the pages stage).
HANDWRITTEN := $(wildcard docs/*.md docs/javascripts/*.js docs/stylesheets/*.css)
# Material's offline plugin would load this Web Worker shim (search from file://) from a CDN; we take it
# from the npm registry at build time instead, so the site makes no request to another host.
SHIM_VERSION := 1.0.4
SHIM := docs/javascripts/iframe-worker/shim.js

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(INSTALLED) ## create .venv and install the project with its dependencies

$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[site,dev]'
	touch $@

report: $(SITE) ## the main job: train what is missing, evaluate, draw figures, render pages, build the site

train: $(CLS_RUN) $(MT_RUN) ## train both models (resumes an interrupted run)

train-cls: $(CLS_RUN) ## train ResNet-18 on CIFAR-10 (PROFILE=smoke for seconds; CLS_ARGS="--epochs 3")

train-mt: $(MT_RUN) ## train the Transformer on toy French->English (MT_ARGS="--corpus short")

$(CLS_RUN): | $(SETUP)
	$(PIPELINE) train cls --resume --profile $(PROFILE) $(CLS_ARGS)

$(MT_RUN): | $(SETUP)
	$(PIPELINE) train mt --resume --profile $(PROFILE) $(MT_ARGS)

$(CLS_EVAL): $(CLS_RUN)
	$(PY) -m pipeline evaluate cls

$(MT_EVAL): $(MT_RUN)
	$(PY) -m pipeline evaluate mt

$(CLS_FIGURES): $(CLS_EVAL) $(wildcard pipeline/figures/*.py)
	$(PY) -m pipeline figures cls

$(MT_FIGURES): $(MT_EVAL) $(wildcard pipeline/figures/*.py)
	$(PY) -m pipeline figures mt

$(EXPERIMENT_RESULTS): $(EXPERIMENTS) $(FINISHED) $(CLS_EVAL) $(MT_EVAL)
	$(PY) -m pipeline compare

$(EXPERIMENT_FIGURES): $(EXPERIMENT_RESULTS) $(wildcard pipeline/figures/*.py)
	$(PY) -m pipeline figures experiments

figures: $(MANIFEST) ## evaluate both runs, compare the experiments, draw every figure into site_assets/

$(MANIFEST): $(CLS_FIGURES) $(MT_FIGURES) $(EXPERIMENT_FIGURES)
	$(PY) -m pipeline manifest

experiments: $(CLS_EVAL) $(MT_EVAL) ## train the missing runs of experiments.yaml (NAMES="masks seeds-mt" for some), then compare
	$(PIPELINE) experiments $(NAMES)
	$(MAKE) --no-print-directory $(EXPERIMENT_FIGURES)

pages: $(PAGES) $(NOTEBOOKS) ## render the templates into docs/generated/ and execute the notebooks

offline-search: ## fetch Material's search shim from npm, so search works from file:// too (needs npm)
	$(MAKE) --no-print-directory $(SHIM) NPM_REQUIRED=1

# Optional: without npm the site builds and searches when served; this line says how to get the rest.
$(SHIM):
	@if command -v npm >/dev/null 2>&1; then \
		mkdir -p $(@D) && cd $(@D) && npm pack --silent iframe-worker@$(SHIM_VERSION) >/dev/null \
		&& tar -xzf iframe-worker-$(SHIM_VERSION).tgz --strip-components=2 package/shim/index.js \
		&& mv index.js shim.js && rm iframe-worker-$(SHIM_VERSION).tgz; \
	elif [ -n "$(NPM_REQUIRED)" ]; then echo "npm is not installed: install Node.js and npm, then run make offline-search." >&2; exit 1; \
	else echo "note: no npm, so no search from file:// (search works under make serve); install npm, then make offline-search."; fi

$(PAGES): $(MANIFEST) $(wildcard pipeline/templates/*.j2 pipeline/templates/experiments/*.j2) pipeline/report/pages.py \
		$(HANDWRITTEN) | $(SHIM)
	$(PY) -m pipeline pages

$(NOTEBOOKS): $(MANIFEST) $(wildcard pipeline/templates/notebooks/*.py)
	$(PY) -m pipeline notebooks

site: $(SITE) ## build the static site into site/ with MkDocs (strict)

$(SITE): $(PAGES) $(NOTEBOOKS) mkdocs.yml $(HANDWRITTEN)
	cd $(ROOT) && $(BIN)/$(MKDOCS_BUILD)

serve: $(PAGES) $(NOTEBOOKS) ## browse the site at http://127.0.0.1:8000 (mkdocs serve)
	$(BIN)/mkdocs serve

deploy: $(SITE) ## publish site/ to the gh-pages branch (built as the Pages workflow builds it)
	$(BIN)/ghp-import --no-jekyll --push --force $(ROOT)/site

bench-cls: $(SETUP) ## train the default ResNet run, print its table, time a plain baseline and torch.compile beside it (CLS_ARGS=--speed_only: the timings alone)
	$(PY) -m pipeline bench cls $(CLS_ARGS)

bench-mt: $(SETUP) ## train the default Transformer run, print its table and test scores, time its beam search batched and one sentence at a time
	$(PY) -m pipeline bench mt $(MT_ARGS)

test: $(SETUP) ## run the test suite (fast, CPU, no real data)
	$(PY) -m pytest -q

clean: ## remove every checkpoint, test output and evaluation and the built site (keeps the committed runs' metrics and the report)
	rm -rf $(ROOT)/site
	find $(ROOT)/runs -depth \( -name checkpoint.pt -o -name 'test_outputs.*' -o -name eval \) -exec rm -rf {} + 2>/dev/null || true

.PHONY: help setup report train train-cls train-mt figures experiments pages offline-search site serve deploy bench-cls bench-mt test clean
