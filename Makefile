# visual-words — the front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
VW := $(VENV)/bin/vw
export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0
export DVC_NO_ANALYTICS ?= 1
PROFILE ?= smoke

.PHONY: help install demo test test-slow lint rehearse rehearse-claims bench docker-test cluster-test clean clean-profile

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | grep -v 'is ignored' || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import torch, torchvision, open_clip, diffusers, transformers, visual_words" # fail loudly if broken
	@touch $@

install: $(VENV)/.installed ## create .venv (if missing) and install the pinned environment (requirements.lock)

demo: install ## run the main job: the whole study on the smoke profile (tiny models, CPU, minutes)
	$(VW) reproduce --profile $(PROFILE)

test: install lint ## lint, then every test not marked slow (HF_HUB_OFFLINE=1; a few minutes)
	$(PY) -m pytest -q -m "not slow"

test-slow: install ## the slow tests: whole smoke studies, DVC fresh clones, Ray, Chromium (≈ 15 min; CI runs them)
	$(PY) -m pytest -q -m slow

lint: install ## ruff (line length, import order, unused names) + the layers: imports run only down, no loops
	$(PY) -m ruff check src tests benchmarks tools
	$(VENV)/bin/lint-imports

rehearse: install ## full size on CPU, random-weight models, few trials: the paper profile, then the claims run from an empty workspace (≈ 31 min)
	$(VW) rehearsal-models
	$(VW) reproduce --profile rehearsal
	$(PY) -m pytest -q --rehearsal

rehearse-claims: install ## only the claims run's rehearsal: fetch (local archives), OWLv2 boxes, every stage (≈ 15 min)
	$(VW) rehearsal-models
	$(PY) -m pytest -q --rehearsal tests/test_claims_fetch_rehearsal.py

bench: install ## run every benchmark (pytest-benchmark); each prints `NAME ratio=…`
	$(PY) -m pytest benchmarks -s -q -p no:cacheprovider --benchmark-only

docker-test: ## build the image and run the smoke study inside it with --network none
	bash docker/test.sh

cluster-test: install ## train + evaluate on a 2-node Ray cluster whose worker shares no disk, a node killed (root; ≈ 8 min)
	$(PY) -m pytest -q -s --cluster tests/test_cluster.py

clean: ## remove generated outputs (artifacts/, every reports/<profile>/, mlflow store); keeps .venv and data/
	rm -rf artifacts mlruns mlartifacts mlflow.db
	[ ! -d reports ] || find reports -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +

clean-profile: ## remove one profile's outputs (PROFILE=smoke): artifacts/$(PROFILE)/, reports/$(PROFILE)/
	@test -n "$(PROFILE)" || { echo "make clean-profile: set PROFILE=<name>"; exit 2; }
	rm -rf artifacts/$(PROFILE) reports/$(PROFILE)
