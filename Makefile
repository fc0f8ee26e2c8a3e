SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

##@ General

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install credward with its dev tools.

.PHONY: controlplane
controlplane: install ## Build (once, cached) the local kube-apiserver, kube-controller-manager, kubectl, etcd and kstatus.
	$(VENV)/bin/credward dev build

.PHONY: demo
demo: install ## Control plane, security service, operator; examples applied, registered and synced; a token from the mounted secret, validated.
	$(VENV)/bin/credward dev demo

##@ Verification

.PHONY: lint
lint: install ## ruff, mypy --strict (package, bench and tests), and the import-layer contracts.
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests
	$(VENV)/bin/lint-imports

.PHONY: fmt
fmt: install ## Format and auto-fix.
	$(VENV)/bin/ruff format operator tests bench
	$(VENV)/bin/ruff check --fix operator tests bench

.PHONY: unit
unit: install ## Unit tests only (pure logic, no servers).
	$(PYTHON) -m pytest -m unit $(PYTEST_ARGS)

.PHONY: integration
integration: install controlplane ## Integration tests only (real control plane, real service, SQLite and PostgreSQL).
	$(PYTHON) -m pytest -m integration $(PYTEST_ARGS)

.PHONY: test
test: lint controlplane ## Lint, then unit + integration + e2e tests against real servers.
	$(PYTHON) -m pytest $(PYTEST_ARGS)

.PHONY: bench
bench: install controlplane ## Token endpoint per HTTP server, validator, revocation feed, RoleBinding-to-token latency (bench/*.json; needs wrk).
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
	$(PYTHON) -m bench.token_endpoint $(BENCH_ARGS)
	$(PYTHON) -m bench.validator
	$(PYTHON) -m bench.feed
	$(PYTHON) -m bench.rolebinding_latency

.PHONY: bench-operator
bench-operator: install controlplane ## 1000 credentials (+ a RoleBinding each) at once, a restart, a rotation sweep (bench/operator.json; BENCH_ARGS=--count 10000).
	$(PYTHON) -m bench.operator --out bench/operator.json $(BENCH_ARGS)

.PHONY: bench-webhook
bench-webhook: install controlplane ## Pod create p50/p99 with and without the webhook's opt-in label, and its request rate per core (bench/webhook.json).
	$(PYTHON) -m bench.webhook $(BENCH_ARGS)
