# Set-up and the everyday jobs. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install sysdeps demo serve test lint format

# FluidSynth + a small General MIDI soundfont (the synthetic benchmark and its tests), and Chromium
# with its driver (the web app's browser test).
sysdeps:
	@command -v fluidsynth >/dev/null && ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1 \
		&& command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends \
			fluidsynth timgm6mb-soundfont chromium chromium-driver; }

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/musiclm generate "a calm lo-fi hip hop beat with soft piano at 80 bpm" -o demo.wav --plot

serve: install
	$(VENV)/bin/musiclm serve

# Two test processes (pytest-xdist), a file's tests in one of them so that a module's trained fixture
# is built once; each process takes its share of the cores (tests/conftest.py). `-n 0` runs them in one.
test: install sysdeps
	MUSICLM_REQUIRE_SYNTH=1 MUSICLM_REQUIRE_BROWSER=1 $(PY) -m pytest -q -n 2 --dist loadfile

lint:
	$(VENV)/bin/ruff check musiclm tests benchmarks
	$(VENV)/bin/ruff format --check musiclm tests benchmarks

format:
	$(VENV)/bin/ruff check --fix musiclm tests benchmarks
	$(VENV)/bin/ruff format musiclm tests benchmarks
