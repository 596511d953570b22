# Two commands: `make up` and `make test`. Everything the project needs is installed here.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps up test lint lint-only clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -c constraints.txt "torch==2.13.0" "numpy<2"
	$(BIN)/pip install -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP) system-deps

# Debian packages the tests, `mlstack up --with-prometheus` and `mlstack bench --engine wrk` need:
# prometheus + promtool, and wrk (the C load generator of the throughput legs).
system-deps:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
	  echo "installing Debian's prometheus package (prometheus, promtool)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus \
	    || { echo "could not install prometheus: run 'apt-get install prometheus' as root"; exit 1; }; \
	fi
	@if ! command -v wrk >/dev/null 2>&1; then \
	  echo "installing Debian's wrk package (load generator for mlstack bench --engine wrk)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends wrk \
	    || { echo "could not install wrk: run 'apt-get install wrk' as root"; exit 1; }; \
	fi

# Trains the ten demo models only when model_repository/ holds none, then runs the stack in the foreground.
up: install
	$(BIN)/mlstack train --all --if-empty
	$(BIN)/mlstack up $(UP_ARGS)

test: install lint-only
	$(BIN)/python -m pytest

lint-only:
	$(BIN)/ruff check .
	$(BIN)/mypy mlstack training services auth_api apps loadtests monitoring

lint: install lint-only

clean:
	rm -rf $(VENV) var
