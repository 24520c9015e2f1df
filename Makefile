# The two commands of README.md:
#   make demo   set everything up, run the demo on the embedded default (SQLite + in-process worker)
#   make test   set everything up (venv, PostgreSQL, Redis), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install services bench-kcenter bench-train clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[worker,dev]'
	touch $@

install: $(BIN)/.installed

services:
	bash scripts/services.sh

demo: install
	$(BIN)/svp demo

test: install services
	$(BIN)/pytest

clean:
	rm -rf $(VENV) svp-data .pytest_cache
