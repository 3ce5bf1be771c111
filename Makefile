# N3Hub developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# Only the local stack shares a metrics directory; tests and the bench make their own.
run: export PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/var/prometheus

.DEFAULT_GOAL := help
.PHONY: help venv run test lint format migrate bench clean clean-data

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "N3Hub needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed ## Create .venv and install the pinned dependencies

run: venv ## Run the stack in the foreground: web on :5000 ($PORT), a worker, Redis if none answers
	rm -rf $(PROMETHEUS_MULTIPROC_DIR) && mkdir -p $(PROMETHEUS_MULTIPROC_DIR)
	flask --app app db upgrade
	flask --app app keys dev
	if python -m scripts.local_redis needed; then honcho start; else honcho start web worker; fi

test: venv lint ## Run the linters and the whole test suite (in a random order; the seed is printed)
	pytest $(PYTEST_ARGS)

lint: venv ## Check style with ruff, and app/ with bandit (medium and high findings)
	ruff check .
	ruff format --check .
	bandit --quiet --recursive --severity-level medium app

format: venv ## Reformat the code with ruff
	ruff check --fix .
	ruff format .

migrate: venv ## Upgrade the configured database to the newest schema
	flask --app app db upgrade

bench: venv ## Measure ingest, drain, latency and reads (var/bench/results.json)
	python -m scripts.bench $(BENCH_ARGS)

clean: ## Remove the virtualenv, caches and run-time files; keeps the database (instance/) and var/backups
	rm -rf $(VENV) var/prometheus var/redis var/bench .pytest_cache .ruff_cache .coverage htmlcov

clean-data: ## Delete the local database (instance/) and everything under var/, backups included
	rm -rf instance var
