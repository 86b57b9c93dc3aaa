# agent-fleet: `make run` starts a local fleet, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services run test lint chaos mutants bench profile clean status drain inspect stuck lock

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[client,test,bench]"
	touch $@

services:
	@deploy/local-services.sh

run: install services
	$(BIN)/fleet dev --llm fake

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install services lint
	$(BIN)/python -m pytest

# Longer fault scenarios (more conversations, more rounds), on one Redis and RabbitMQ and
# on local clusters of each; prints the table at the end.
chaos: install services
	$(BIN)/python -m pytest tests/chaos tests/cluster --chaos-long --timeout 900

# Deliberate breakages of the guarantees (tests/mutants.py), each applied to a scratch
# copy; prints the test that caught each and fails if one was not caught. Slow; not in
# `make test`. `make mutants MUTANTS="'gap fill'"` runs some only.
mutants: install services
	$(BIN)/python -m tests.mutants $(MUTANTS)

bench: install services
	$(BIN)/python -m bench $(if $(QUICK),--quick)

# Flame graphs of the gateway and a worker under the throughput scenario (py-spy):
# bench/profiles/{gateway,worker}.svg and summary.txt.
profile: install services
	$(BIN)/python -m bench --only throughput --profile $(if $(QUICK),--quick)

# Ops, for the fleet of FLEET_NAMESPACE (and the FLEET_* URLs) in the environment.
status: install
	$(BIN)/fleet status $(if $(WATCH),--watch)

drain: install
	@test -n "$(WORKER)" || { echo "usage: make drain WORKER=<worker id from make status>"; exit 2; }
	$(BIN)/fleet drain $(WORKER)

inspect: install
	@test -n "$(ID)" || { echo "usage: make inspect ID=<conversation id>"; exit 2; }
	$(BIN)/fleet inspect $(ID)

stuck: install
	$(BIN)/fleet conversations --stuck

# The image's pinned dependencies (deploy/requirements.lock), from pyproject.toml.
lock: install
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	  --output-file deploy/requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
