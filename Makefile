# PenguinMails infrastructure toolkit. `make up` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
STACK ?= dev
PY := .venv/bin/python
# `make test` runs test files on this many pytest-xdist workers (0: in this process, serially). A file's tests
# stay on one worker (--dist loadfile: module fixtures run once); PYTEST_ARGS adds to these.
PYTEST_WORKERS ?= 2
XDIST_ARGS := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
ENV := source tools/env.sh &&

.PHONY: help bootstrap engine devenv-start devenv-stop devenv-status stack up preview check refresh down \
        test test-unit lint format bench clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

bootstrap: ## Install Debian packages and the Python venv (idempotent).
	@bash tools/bootstrap.sh

engine: ## Build the Pulumi engine from Go modules (cached in .cache/engine).
	@bash tools/build-engine.sh

devenv-start: bootstrap ## Start the local embedded services (loopback only, data in .devenv/).
	@$(PY) -m devenv start

devenv-stop: ## Stop the local embedded services.
	@if [ -x $(PY) ]; then $(PY) -m devenv stop; fi

devenv-status: ## Show the local embedded services.
	@$(PY) -m devenv status

stack: bootstrap engine
	@$(ENV) pulumi stack select $(STACK) --create --non-interactive >/dev/null

up: devenv-start stack ## Create or update the dev stack for real (refreshed first: drift is repaired), then check its monitoring coverage.
	@$(ENV) pulumi up --stack $(STACK) --refresh --yes --non-interactive --skip-preview --color never
	@$(ENV) .venv/bin/penguinmails monitoring exporter --stack $(STACK) --install
	@$(ENV) .venv/bin/penguinmails db backup-scheduler --stack $(STACK) --install
	@$(ENV) .venv/bin/penguinmails monitoring coverage --stack $(STACK) --wait 120

preview: devenv-start stack ## Show what `make up` would change (with the policy pack).
	@$(ENV) pulumi preview --stack $(STACK) --diff --policy-pack policies --non-interactive --color never

check: devenv-start stack ## Fail unless the real state matches the program: refresh (mail hosts in check mode), no changes, policies pass.
	@$(ENV) pulumi preview --stack $(STACK) --refresh --expect-no-changes --policy-pack policies --non-interactive --color never

refresh: devenv-start stack ## Read the real state back and show drift.
	@$(ENV) pulumi refresh --stack $(STACK) --yes --non-interactive --color never

down: ## Destroy the dev stack and stop the services.
	@if [ -x .cache/engine/current/bin/pulumi ] && [ -d .state/backend ]; then \
	  $(PY) -m devenv start >/dev/null; \
	  $(ENV) pulumi destroy --stack $(STACK) --yes --non-interactive --color never; fi
	@$(MAKE) --no-print-directory devenv-stop

test: devenv-start engine ## Run the whole suite (unit, engine and service tests) on PYTEST_WORKERS workers.
	@$(ENV) $(PY) -m pytest $(XDIST_ARGS) $(PYTEST_ARGS)

test-unit: bootstrap ## Only the fast unit tests.
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: bootstrap ## ruff lint and format check.
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: bootstrap
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: devenv-start engine ## Run the benchmarks under bench/ (results in bench/results/).
	@$(ENV) $(PY) -m bench

clean: down ## Remove the dev state and service data (keeps the engine cache).
	@$(PY) -c 'from devenv.postgres import PostgresService; PostgresService().discard()'
	rm -rf .state .devenv
