#!/usr/bin/env bash
# Snakemake runs this after creating envs/train.yaml's environment (with the env active).
# audiocraft's own metadata pins torch==2.1.0 and xformers: install it without its deps.
set -euo pipefail
python -m pip install --no-deps audiocraft==1.3.0
# Resemblyzer (speaker screening) asks for webrtcvad from source: webrtcvad-wheels (in the env) has it.
python -m pip install --no-deps resemblyzer==0.1.4
