# The only entry points; CI (.ci/run) calls the same targets a developer runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install system-deps run demo test lint format bench clean

$(BIN)/python:
	@echo "make: creating the virtualenv in ./$(VENV)"
	$(PYTHON) -m venv $(VENV)

# pip is quiet (-q) and the first install downloads everything: say so before it starts.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "make: installing zipedge and its dependencies into ./$(VENV) (pip; the first time takes a few minutes)"
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[demo,test,dev]'
	touch $@

## install: the virtualenv with zipedge and its test/dev tools (./.venv)
install: $(VENV)/.installed

## system-deps: Debian packages the tests and the local stack need (apt-get, when missing)
system-deps:
	scripts/system-deps

## run: demo photos in ./var/demo, then the service on http://$(HOST):$(PORT) (folder storage, no Redis)
run: install
	$(BIN)/zipedge demo --url http://$(HOST):$(PORT)
	$(BIN)/zipedge serve --host $(HOST) --port $(PORT)

## test: everything needed, then the whole suite (real SeaweedFS, redis-server, archive tools)
test: system-deps install
	$(BIN)/pytest

## lint: ruff and mypy --strict
lint: install
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix service tests bench
	$(BIN)/ruff format service tests bench

## bench: the benchmark (SeaweedFS on loopback and at 20 ms RTT); prints the figures
bench: system-deps install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
