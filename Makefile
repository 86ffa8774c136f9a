# Two entry points a new user needs (see README):
#   make demo   set up, then run a virtual bench of 3 boards streaming telemetry
#   make test   set up, then run the test suite (the emulated chip's: make test-emulated)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-emulated bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# MicroPython's type stubs, one folder per port (each ships its own
	# machine.pyi): the firmware is type-checked against them by the tests,
	# which install nothing themselves.
	for port in esp32 rp2; do \
	  $(BIN)/pip install --quiet --upgrade --no-deps --target $(VENV)/mpy-stubs/$$port \
	    "micropython-$$port-stubs>=1.24" "micropython-stdlib-stubs>=1.24" || exit 1; \
	done
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# Three workers on two cores: the session waits on boards and links about half
# the time. The HIL suites' whole runs (xdist group hil-suite-runs, about 10
# minutes) go to one worker, first and one at a time; the others run the rest.
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 3 --dist loadgroup -q $(PYTEST_ARGS)

# The emulated RP2040's tests (marker `emulated`; tests/conftest.py skips them
# elsewhere): the real MicroPython rp2 firmware on rp2040js. They need Node +
# npm (installed with apt-get when missing) and the firmware, which
# `edge emulator build` builds on the first run (network, ~1 GB of packages,
# a minute or two; then "cached", see docs/emulated.md).
# Two workers, each test file on one (a file shares one bench).
test-emulated: $(STAMP)
	bash scripts/need-node.sh
	$(BIN)/edge emulator build
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadfile -q -m emulated $(PYTEST_ARGS)

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash -c 'for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done'

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
