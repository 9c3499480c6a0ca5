#!/usr/bin/env bash
# Snakemake runs this after creating envs/train.yaml's environment (with the env active).
# audiocraft's own metadata pins torch==2.1.0 and xformers: install it without its deps.
set -euo pipefail
python -m pip install --no-deps audiocraft==1.3.0
