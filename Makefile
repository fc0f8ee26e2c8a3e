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

# Exactly the locked set (hashes checked), then credward itself without resolving anything; pip check fails
# when pyproject.toml asks for something the lock does not hold (run `make lock`).
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e .
	$(PYTHON) -m pip check
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install credward with its dev tools, as pinned in requirements-dev.lock.

LOCK_FLAGS = --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

.PHONY: lock
lock: install ## Re-pin requirements*.lock from pyproject.toml (keeps current pins; UPGRADE=1 takes the newest allowed).
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.lock
	$(VENV)/bin/uv pip compile --group build $(LOCK_FLAGS) -o requirements-build.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --group build \
	  -c requirements.lock -c requirements-build.lock $(LOCK_FLAGS) -o requirements-dev.lock

.PHONY: controlplane
controlplane: install ## Build (once, cached) the local kube-apiserver, kube-controller-manager, kubectl, etcd, kstatus and helm.
	$(VENV)/bin/credward dev build

.PHONY: crds
crds: ## Copy crds/*.yaml into the Helm chart and examples/gitops/crds (tests keep the copies identical).
	rm -f charts/credward/files/crds/*.yaml examples/gitops/crds/*.credward.io.yaml
	cp crds/*.yaml charts/credward/files/crds/
	cp crds/*.yaml examples/gitops/crds/

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
bench: install controlplane ## Token endpoint per HTTP server, validator, revocation feed, RoleBinding-to-token and revocation latency (bench/*.json; needs wrk).
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
	$(PYTHON) -m bench.token_endpoint $(BENCH_ARGS)
	$(PYTHON) -m bench.validator
	$(PYTHON) -m bench.feed
	$(PYTHON) -m bench.rolebinding_latency
	$(PYTHON) -m bench.revocation

.PHONY: bench-revocation
bench-revocation: install controlplane ## Revocation (spec.revoked, deletion) to the token endpoint and to a feed-following validator: p50/p99 (bench/revocation.json).
	$(PYTHON) -m bench.revocation $(BENCH_ARGS)

.PHONY: bench-operator
bench-operator: install controlplane ## 1000 credentials (+ a RoleBinding each) at once, a restart, a rotation sweep (bench/operator.json; BENCH_ARGS=--count 10000).
	$(PYTHON) -m bench.operator --out bench/operator.json $(BENCH_ARGS)

.PHONY: bench-webhook
bench-webhook: install controlplane ## Pod create p50/p99 with and without the webhook's opt-in label, and its request rate per core (bench/webhook.json).
	$(PYTHON) -m bench.webhook $(BENCH_ARGS)

##@ Packaging

IMAGE ?= credward:dev

.PHONY: image
image: ## Build the container image (docker or podman) from the Dockerfile and requirements*.lock; IMAGE=name:tag.
	@engine=$$(command -v docker || command -v podman || true); \
	if [ -z "$$engine" ]; then echo "make image needs a container engine: neither docker nor podman is installed" >&2; exit 1; fi; \
	if ! "$$engine" info >/dev/null 2>&1; then echo "make image: $$engine is installed but its daemon does not answer ($$engine info failed)" >&2; exit 1; fi; \
	echo "$$engine build -t $(IMAGE) ."; "$$engine" build -t $(IMAGE) .
