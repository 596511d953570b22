# Two commands: `make up` and `make test`. Everything the project needs is installed here.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -c constraints.txt "torch==2.13.0" "numpy<2"
	$(BIN)/pip install -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# Trains the ten demo models only when model_repository/ holds none, then runs the stack in the foreground.
up: install
	$(BIN)/mlstack train --all --if-empty
	$(BIN)/mlstack up $(UP_ARGS)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy mlstack training

clean:
	rm -rf $(VENV) var
