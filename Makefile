# Every target creates .venv by itself on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-packages demo test test-faults lint bench clean
# Integration tests wait on servers more than they compute: more workers than cores pays.
TEST_WORKERS ?= 6

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install segstream with its dev tools

demo: $(STAMP) ## local broker + Redis if none configured, synthetic events, the service, a summary
	$(BIN)/segstream demo --log-format text

system-packages: ## Debian packages the tests need beside Python (promtool), when missing
	@tests/system_packages.sh

test: $(STAMP) system-packages ## unit, integration and deploy tests, in parallel (own Redis and broker per worker)
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-faults: $(STAMP) system-packages ## the fault suite: the real service under kill -9, freezes, restarts, poison pills
	@$(BIN)/python -m pytest -m faults tests/faults; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: $(STAMP) ## ruff (lint + format check), mypy --strict, import contracts, hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

bench: $(STAMP) ## throughput and latency figures of the pipeline, as JSON
	$(BIN)/segstream bench

clean: ## remove the venv, caches and demo/bench output
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo .bench
