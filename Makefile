# Quick start:  make demo  (runs the embedded demo end to end)   make test  (runs the tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo report test test-slurm test-drive lint format clean-demo

$(BIN)/.installed: requirements.txt requirements-train.txt requirements-dev.txt scripts/install.py \
		scripts/voice_train/install.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The workflow's set, then audiocraft and resemblyzer with --no-deps (see scripts/install.py).
	$(BIN)/python scripts/install.py
	# Tests and linters on top.
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores all --configfile config/demo.yaml

# The HTML report of the finished demo (loss curve, samples, summary): results/report.html
report: $(BIN)/.installed
	$(BIN)/snakemake --configfile config/demo.yaml --report results/report.html

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# The cluster path on a one-node Slurm started on this machine (as root: it installs and starts
# Slurm; tests/slurm/start_slurm.sh says why when it cannot). One process: the tests share runs.
# The plugin lives in its own folder, on PYTHONPATH only here (see requirements-slurm.txt).
SLURM_PLUGINS := .slurm-plugins
$(SLURM_PLUGINS)/.installed: requirements-slurm.txt $(BIN)/.installed
	rm -rf $(SLURM_PLUGINS)
	$(BIN)/python -m pip install --quiet --no-deps --target $(SLURM_PLUGINS) -r requirements-slurm.txt
	touch $@

test-slurm: $(SLURM_PLUGINS)/.installed
	tests/slurm/start_slurm.sh
	PYTHONPATH=$(CURDIR)/$(SLURM_PLUGINS) $(BIN)/python -m pytest -m slurm -n 0 tests/test_slurm.py tests/test_profiles.py

# Durability on a Drive-like FUSE mount (tests/drive/): kills during saves, a full quota. As root it
# installs Debian's fuse3 when missing (tests/drive/setup_fuse.sh says why when it cannot).
test-drive: $(BIN)/.installed
	tests/drive/setup_fuse.sh
	$(BIN)/python -m pytest -m drive -n 0 tests/test_drive.py

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
