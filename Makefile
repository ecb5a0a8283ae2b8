# The README's two commands: `make up` runs opsflow on the lab, `make test` runs the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: up test test-fast lint format docs debian-packages clean

$(BIN)/opsflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

debian-packages:
	./scripts/install-debian-packages

up: debian-packages $(BIN)/opsflow
	$(BIN)/opsflow up

# pytest exits 5 when it collected no tests: that is a failure of the suite, say so.
test: debian-packages $(BIN)/opsflow
	$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The tests that need no lab host, Prefect server, Prometheus/Alertmanager or browser (none
# marked `slow`, tests/conftest.py), for the edit-and-run loop; `make test` stays the suite.
test-fast: debian-packages $(BIN)/opsflow
	$(BIN)/pytest -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Every shell script: the *.sh files (those opsflow runs on hosts among them), and the two
# scripts without a suffix.
SHELL_SCRIPTS = $(shell find . -name '*.sh' -not -path './.*' -not -path './build/*') \
	scripts/install-debian-packages lab/files/svc

lint: debian-packages $(BIN)/opsflow
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/lint_imports.py
	$(BIN)/python scripts/lint_types.py
	shellcheck $(SHELL_SCRIPTS)

format: $(BIN)/opsflow
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# docs/cli.md is generated from the CLI; a test fails when it is out of date.
docs: $(BIN)/opsflow
	$(BIN)/python -m opsflow.cli.reference

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
