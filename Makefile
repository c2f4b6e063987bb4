# Set-up and the everyday jobs. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint format

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/musiclm demo -o demo.wav

test: install
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check musiclm tests benchmarks
	$(VENV)/bin/ruff format --check musiclm tests benchmarks

format:
	$(VENV)/bin/ruff check --fix musiclm tests benchmarks
	$(VENV)/bin/ruff format musiclm tests benchmarks
