# Set-up and the everyday jobs. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROMPT ?= a calm lo-fi hip hop beat with soft piano at 80 bpm

.PHONY: install system-deps demo test lint format

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[data,dev]"
	touch $@

install: $(VENV)/.installed

# FluidSynth and a General MIDI soundfont render the synthetic captioned benchmark.
system-deps:
	@command -v fluidsynth >/dev/null && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends fluidsynth fluid-soundfont-gm; }

demo: install
	$(VENV)/bin/musiclm demo -o demo.wav

test: install system-deps
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check musiclm tests benchmarks
	$(VENV)/bin/ruff format --check musiclm tests benchmarks

format:
	$(VENV)/bin/ruff check --fix musiclm tests benchmarks
	$(VENV)/bin/ruff format musiclm tests benchmarks
