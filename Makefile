# Every target sets up the virtualenv from the project's own files first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup proto proto-lint proto-breaking test test-heavy run bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

proto: setup
	$(PY) -m tools.gen_protos

proto-lint: setup
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format -d --exit-code

proto-breaking: setup
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:protos 2>/dev/null; then \
		$(VENV)/bin/buf breaking --against '.git#branch=main' && echo "buf breaking: no breaking change against main"; \
	else echo "buf breaking: no protos on main yet, nothing to compare"; fi

test: proto proto-lint proto-breaking
	$(PY) -m pytest -m "not heavy" -q

test-heavy: proto
	$(PY) -m pytest -m heavy -q

run: setup
	$(VENV)/bin/equihome-sim serve --integrations sandbox

bench: proto
	$(PY) -m bench.simulation_core

clean:
	rm -rf $(VENV) equihome .pytest_cache .hypothesis data
