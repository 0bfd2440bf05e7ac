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

# The locks pin every package with its hashes (make lock refreshes them): run.lock what the report needs, dev.lock
# that and the test tools.
RUN_LOCK := requirements/run.lock
DEV_LOCK := requirements/dev.lock
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.installed-dev
OWN_VENV := $(filter $(abspath $(VENV))/bin,$(BIN))
SETUP := $(if $(OWN_VENV),$(INSTALLED))
DEV_SETUP := $(if $(OWN_VENV),$(DEV_INSTALLED))
# What each stage's outputs depend on besides its inputs: its own code, and what every stage shares.
SHARED_CODE := pipeline/config.py pipeline/io.py pipeline/__main__.py
EVALUATE_CODE := $(wildcard pipeline/evaluate/*.py pipeline/scoring/*.py pipeline/models/*.py pipeline/data/*.py) \
	pipeline/runtime.py pipeline/trained.py $(SHARED_CODE)
COMPARE_CODE := $(wildcard pipeline/compare/*.py pipeline/experiments/*.py) pipeline/scoring/bleu.py $(SHARED_CODE)
FIGURES_CODE := $(wildcard pipeline/figures/*.py) $(SHARED_CODE)
PAGES_CODE := $(wildcard pipeline/templates/*.j2 pipeline/templates/experiments/*.j2 \
	pipeline/templates/experiments/designs/*.j2) pipeline/report/pages.py \
	$(SHARED_CODE)
NOTEBOOKS_CODE := $(wildcard pipeline/templates/notebooks/*.py) pipeline/report/notebooks.py $(SHARED_CODE)
# A main run counts as trained in this checkout once its test outputs exist (written when its test set is scored,
# never committed). Its committed metric files alone let a fresh checkout compare and render pages, not evaluate:
# so evaluation and what reads its arrays (the model figures, the notebooks) have prerequisites only where the run
# is here (a fresh clone's file times are the order git wrote them in), and `make report` on a fresh clone rebuilds
# the committed report without training.
CLS_RUN := $(ROOT)/runs/cls/main/test_outputs.npz
MT_RUN := $(ROOT)/runs/mt/main/test_outputs.json
CLS_HERE := $(wildcard $(CLS_RUN))
MT_HERE := $(wildcard $(MT_RUN))
CLS_EVAL := $(ROOT)/site_assets/cls/metrics.json
MT_EVAL := $(ROOT)/site_assets/mt/metrics.json
CLS_FIGURES := $(ROOT)/site_assets/cls/figures.json
MT_FIGURES := $(ROOT)/site_assets/mt/figures.json
EXPERIMENT_RESULTS := $(ROOT)/site_assets/experiments/index.json
EXPERIMENT_FIGURES := $(ROOT)/site_assets/experiments/figures.json
# What the comparison stage reads: every finished run and analysis there is when Make starts.
# The comparison also tabulates the bench's speed measurements (step_speed.json, decode_speed.json).
FINISHED := $(wildcard $(ROOT)/runs/*/*/final.json $(ROOT)/runs/cls/analyses/*.json $(ROOT)/runs/*/*/*_speed.json)
NAMES ?=
# The experiments file (the tests point it at a tiny one).
EXPERIMENTS ?= experiments.yaml
export PIPELINE_EXPERIMENTS := $(abspath $(EXPERIMENTS))
MANIFEST := $(ROOT)/site_assets/manifest.json
PAGES := $(ROOT)/docs/generated/home.md
BENCHMARKS := $(ROOT)/BENCHMARKS.md
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

setup: $(INSTALLED) ## create .venv and install exactly the locked versions the report needs

$(INSTALLED): $(RUN_LOCK) pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(RUN_LOCK)
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(DEV_INSTALLED): $(DEV_LOCK) $(INSTALLED)
	$(VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(DEV_LOCK)
	touch $@

# uv lives in an environment of its own inside .venv, apart from the locked packages. It resolves one universal lock
# for every platform and Python at once: markers keep the CUDA wheels to Linux, and plain pip evaluates them.
# Versions already in a lock are kept where they still fit, so a refresh moves only what it must.
LOCK_TOOLS := $(VENV)/lock-tools
UV := $(LOCK_TOOLS)/bin/uv
UV_COMPILE := $(UV) pip compile --quiet --universal --generate-hashes --python-version 3.11 \
	--constraint requirements/constraints.in pyproject.toml
# Where the locks must install: macOS on Apple silicon (torch's Mac wheels need macOS 14), Linux x86_64 and ARM.
LOCK_PLATFORMS := aarch64-apple-darwin x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
LOCK_PYTHONS := 3.11 3.12 3.13

$(UV): requirements/lock-tools.txt
	test -x $(LOCK_TOOLS)/bin/python || $(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements/lock-tools.txt
	touch $@

lock: $(UV) ## refresh requirements/*.lock from pyproject.toml (after changing a dependency; then make setup)
	$(UV_COMPILE) --extra site -o $(RUN_LOCK)
	$(UV_COMPILE) --extra site --extra dev -o $(DEV_LOCK)

# Resolves each lock for each platform and Python without that hardware and without downloading a wheel (it needs
# the package index, so CI runs it and the offline test suite does not).
lock-check: $(UV) ## check that both locks install on macOS arm64 and Linux x86_64/aarch64, CPython 3.11-3.13
	@failed=; for lock in $(RUN_LOCK) $(DEV_LOCK); do for platform in $(LOCK_PLATFORMS); do \
	  for python in $(LOCK_PYTHONS); do \
	    if MACOSX_DEPLOYMENT_TARGET=14.0 $(UV) pip install --quiet --dry-run --no-deps --require-hashes \
	        --python-platform $$platform --python-version $$python --target $(LOCK_TOOLS)/dry-run -r $$lock \
	        >$(LOCK_TOOLS)/dry-run.log 2>&1; then echo "ok      $$lock  $$platform  CPython $$python"; \
	    else echo "FAILED  $$lock  $$platform  CPython $$python:"; sed 's/^/        /' $(LOCK_TOOLS)/dry-run.log; \
	      failed=1; fi; \
	  done; done; done; test -z "$$failed"

# The stage targets run Make again, so that in `make train report` they see the runs `make train` just made (which
# runs are here is read when Make starts).
report: ## evaluate the main runs trained here (make train), compare, draw, render pages, build the site
	@$(MAKE) --no-print-directory $(SITE)

train: $(CLS_RUN) $(MT_RUN) ## train both main runs where this checkout has none (resumes an interrupted run)

train-cls: $(CLS_RUN) ## train ResNet-18 on CIFAR-10 (PROFILE=smoke for seconds; CLS_ARGS="--epochs 3")

train-mt: $(MT_RUN) ## train the Transformer on toy French->English (MT_ARGS="--corpus short")

$(CLS_RUN): | $(SETUP)
	$(PIPELINE) train cls --resume --profile $(PROFILE) $(CLS_ARGS)

$(MT_RUN): | $(SETUP)
	$(PIPELINE) train mt --resume --profile $(PROFILE) $(MT_ARGS)

$(CLS_EVAL): $(if $(CLS_HERE),$(CLS_RUN) $(EVALUATE_CODE)) | $(SETUP)
	$(PY) -m pipeline evaluate cls

$(MT_EVAL): $(if $(MT_HERE),$(MT_RUN) $(EVALUATE_CODE)) | $(SETUP)
	$(PY) -m pipeline evaluate mt

$(CLS_FIGURES): $(if $(CLS_HERE),$(CLS_EVAL) $(FIGURES_CODE))
	$(PY) -m pipeline figures cls

$(MT_FIGURES): $(if $(MT_HERE),$(MT_EVAL) $(FIGURES_CODE))
	$(PY) -m pipeline figures mt

$(EXPERIMENT_RESULTS): $(EXPERIMENTS) $(FINISHED) $(CLS_EVAL) $(MT_EVAL) $(COMPARE_CODE) | $(SETUP)
	$(PY) -m pipeline compare

$(EXPERIMENT_FIGURES): $(EXPERIMENT_RESULTS) $(FIGURES_CODE)
	$(PY) -m pipeline figures experiments

figures: ## evaluate the main runs trained here, compare the experiments, draw every figure into site_assets/
	@$(MAKE) --no-print-directory $(MANIFEST)

$(MANIFEST): $(CLS_FIGURES) $(MT_FIGURES) $(EXPERIMENT_FIGURES) $(FIGURES_CODE)
	$(PY) -m pipeline manifest

# A fresh clone's committed main runs (metric files, no checkpoint) are finished runs to the experiments that include
# them, so make experiments trains a main run first only where this checkout has none (make train trains them again).
MAIN_UNFINISHED := $(foreach run,$(CLS_RUN) $(MT_RUN),$(if $(wildcard $(dir $(run))final.json),,$(run)))

experiments: $(MAIN_UNFINISHED) | $(SETUP) ## train the main runs where this checkout has none, then the missing runs of experiments.yaml (NAMES="masks seeds-mt" for some), then compare
	@$(MAKE) --no-print-directory $(CLS_EVAL) $(MT_EVAL)
	$(PIPELINE) experiments $(NAMES)
	$(MAKE) --no-print-directory $(EXPERIMENT_FIGURES)

pages: ## render the templates into docs/generated/ and execute the notebooks
	@$(MAKE) --no-print-directory $(PAGES) $(NOTEBOOKS)

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

# The pages stage writes BENCHMARKS.md beside the pages. Not a grouped target (&:): under `make -n` GNU make 4.3
# does not pass a grouped target's remaking on to what depends on it.
$(PAGES): $(MANIFEST) $(PAGES_CODE) $(HANDWRITTEN) | $(SHIM)
	$(PY) -m pipeline pages

$(BENCHMARKS): $(PAGES)

# Notebooks execute against both main runs' evaluation arrays: only where both runs are here.
$(NOTEBOOKS): $(if $(and $(CLS_HERE),$(MT_HERE)),$(MANIFEST) $(NOTEBOOKS_CODE))
	$(PY) -m pipeline notebooks

site: ## build the static site into site/ with MkDocs (strict)
	@$(MAKE) --no-print-directory $(SITE)

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

# pytest-xdist spreads the tests over the cores (TEST_WORKERS=1: one process); the slowest are listed at the end.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=12

test: $(DEV_SETUP) ## lint, then run the whole test suite (CPU, no real data; CI runs this)
	$(PY) -m ruff check pipeline tests
	$(PYTEST)

test-quick: $(DEV_SETUP) ## the tests that take seconds, for the edit loop (not the slow end-to-end or browser ones)
	$(PY) -m ruff check pipeline tests
	$(PYTEST) -m "not slow and not browser"

clean: ## remove every checkpoint, test output and evaluation and the built site (keeps the committed runs' metrics and the report)
	rm -rf $(ROOT)/site
	find $(ROOT)/runs -depth \( -name checkpoint.pt -o -name 'test_outputs.*' -o -name eval \) -exec rm -rf {} + 2>/dev/null || true

.PHONY: help setup lock lock-check report train train-cls train-mt figures experiments pages offline-search site serve deploy bench-cls bench-mt test test-quick clean
