# Quick start:  make demo  (runs the embedded demo end to end)   make test  (runs the tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format clean-demo

$(BIN)/.installed: requirements.txt requirements-train.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r requirements-train.txt
	# audiocraft's metadata pins torch 2.1 and xformers: install it without its deps.
	$(BIN)/python -m pip install --quiet --no-deps audiocraft==1.3.0
	touch $@

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores all --configfile config/demo.yaml

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --configfile config/demo.yaml

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile rules

clean-demo:
	rm -rf results data/demo .snakemake
