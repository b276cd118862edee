# Two entry points: `make run` starts the bot, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The README demo's approvers, unless APPROVER_GROUPS is set in the environment or .env:
# `greenlight run` itself refuses to start when a policy's group is missing or empty.
DEMO_GROUPS := {"deployers": ["bob"], "finance": ["bob"]}

run: $(STAMP)
	@if [ -z "$$APPROVER_GROUPS" ] && ! grep -qs '^APPROVER_GROUPS=.' .env; then \
	  echo 'make run: APPROVER_GROUPS is not set: the demo approver is bob (deployers, finance)'; \
	  export APPROVER_GROUPS='$(DEMO_GROUPS)'; \
	fi; exec $(BIN)/greenlight run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.cycles
	$(BIN)/python -m bench.slack_events

clean:
	rm -rf $(VENV) .greenlight .pytest_cache .mypy_cache .ruff_cache
