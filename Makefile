# CT-Ops Certificates: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install schema migrations bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[server,test]"
	touch $(STAMP)

install: $(STAMP)

## Start the server in embedded mode (SQLite in ./data, jobs in-process) on 127.0.0.1:8000.
run: $(STAMP)
	$(BIN)/ctops serve

## The whole test suite, on SQLite and PostgreSQL (needs PostgreSQL and Redis on 127.0.0.1; .ci/run starts them).
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

## Regenerate schema.graphql from the code.
schema: $(STAMP)
	$(BIN)/ctops export-schema > schema.graphql

## Write a migration for model changes.
migrations: $(STAMP)
	$(BIN)/ctops makemigrations

clean:
	rm -rf $(VENV) data
