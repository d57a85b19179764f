# The lakehouse platform's front door. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= 1
SEED ?= 42
PYTEST_ARGS ?=
# Two pytest workers, one test file each at a time: a file's module-scoped servers start once,
# and one worker's tests run while the other's wait on a server, a broker or a subprocess
TEST_WORKERS ?= 2
LAKEHOUSE_HOME ?= $(CURDIR)/.lakehouse
export LAKEHOUSE_HOME

# Re-install only when the lock or the project metadata changes.
LOCK_HASH := $(shell cat requirements.lock pyproject.toml services/edge-agent/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
INSTALLED := $(VENV)/.installed-$(LOCK_HASH)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (these machines) nothing
# writes .pyc files later, and every process (the CLI, the sink's committer) compiled its imports
# from source, 4.0 s against 2.0 s for the sink committer's.
$(INSTALLED): requirements.lock pyproject.toml services/edge-agent/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --require-hashes --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e . -e services/edge-agent
	$(BIN)/python -m compileall -q services
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: install
install: $(INSTALLED) ## Create .venv and install the pinned platform (skipped when up to date)

# The chart's checkers in a venv of their own: checkov's pins must not move requirements.lock.
CHART_TOOLS_VENV ?= .venv-chart-tools
CHART_TOOLS_HASH := $(shell cat infra/chart-tools.lock 2>/dev/null | sha256sum | cut -c1-16)
CHART_TOOLS := $(CHART_TOOLS_VENV)/.installed-$(CHART_TOOLS_HASH)

$(CHART_TOOLS): infra/chart-tools.lock $(INSTALLED)
	@test -x $(CHART_TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(CHART_TOOLS_VENV)
	$(BIN)/uv pip sync --quiet --require-hashes --python $(CHART_TOOLS_VENV)/bin/python infra/chart-tools.lock
	@rm -f $(CHART_TOOLS_VENV)/.installed-* && touch $@

.PHONY: chart-tools
chart-tools: $(CHART_TOOLS) ## The chart's checkers: helm (go install of the locked module, cached), kubernetes-validate and checkov in .venv-chart-tools (skipped when up to date)
	$(BIN)/lakehouse stack install --only helm

.PHONY: chart-tools-lock
chart-tools-lock: install ## Re-resolve infra/chart-tools.lock (kubernetes-validate, checkov) from infra/chart-tools.in
	$(BIN)/uv pip compile infra/chart-tools.in -o infra/chart-tools.lock --python-version 3.11 --universal --no-header --generate-hashes

.PHONY: lock
lock: ## Re-resolve requirements.lock from pyproject.toml (the in-repo edge agent is installed by make install, not locked)
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11 --universal --no-header --generate-hashes --no-emit-package lakehouse-edge

.PHONY: demo
demo: install ## Generate the reference domain, load bronze, stream a slice through Kafka, upload from simulated edge devices, build silver/gold/platinum, show KPIs (SCALE=, SEED=)
	$(BIN)/lakehouse demo --scale $(SCALE) --seed $(SEED)

.PHONY: lint
lint: install ## ruff (lint and format), mypy, and the layer contracts (import-linter)
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

.PHONY: test
test: install chart-tools ## Lint, then every tier (unit, integration, e2e): real Iceberg catalog, DuckDB, dbt, SeaweedFS, Tansu (Kafka), the TLS gateway with edge agents, the chart (helm lint/template, kubernetes-validate, checkov)
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not cluster" $(PYTEST_ARGS)

.PHONY: stack-install
stack-install: install ## Fetch and verify the stack's server artifacts (Trino, Nessie, Kafka jars; OPA built with go install) into the cache
	$(BIN)/lakehouse stack install

.PHONY: test-cluster
test-cluster: stack-install ## The cluster tier: PostgreSQL, Nessie, OPA, Trino and Apache Kafka started once, as processes, for every `cluster` test
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: install ## Only the unit tier: in-process, no server, no subprocess CLI, no dbt (about 20 s, for the edit loop)
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: install chart-tools ## Only the integration tier: SeaweedFS, Tansu, dbt, the TLS gateway, the CLI as a subprocess
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

.PHONY: bench
bench: install ## Benchmarks, each a ratio against a baseline measured in the same run
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

.PHONY: clean
clean: ## Remove the lakehouse home (LAKEHOUSE_HOME, default .lakehouse) and dbt's target/ and logs/, keep .venv
	@home="$$LAKEHOUSE_HOME"; \
	if [ -z "$$home" ]; then echo "clean: LAKEHOUSE_HOME is empty: nothing removed" >&2; exit 1; fi; \
	real=$$(realpath -m -- "$$home"); \
	case "$(CURDIR)/" in "$${real%/}"/*) echo "clean: refusing to remove $$real: it holds this repository" >&2; exit 1;; esac; \
	if [ "$$real" = / ] || [ "$$real" = "$$(realpath -m -- "$$HOME")" ]; then \
		echo "clean: refusing to remove LAKEHOUSE_HOME=$$home" >&2; exit 1; \
	fi; \
	if [ -e "$$real" ]; then \
		if [ -f "$$real/catalog.db" ] || [ -d "$$real/state" ]; then \
			rm -rf -- "$$real" && echo "removed $$real"; \
		else \
			echo "clean: refusing to remove $$real: not a lakehouse home (no catalog.db, no state/)" >&2; exit 1; \
		fi; \
	fi
	rm -rf dbt/target dbt/logs
