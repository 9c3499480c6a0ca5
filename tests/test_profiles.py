"""The Snakemake profiles: each one parses and plans the whole workflow in a dry run."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

# This machine has no conda. Snakemake asks `conda` three questions before it plans jobs in
# conda envs; a stand-in answers them, so the dry run checks our profile, not conda.
FAKE_CONDA = """#!/bin/sh
case "$*" in
  "--version") echo "conda 25.1.1";;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}';;
  "info --json") echo '{"conda_version": "25.1.1", "platform": "linux-64",'\
    '"conda_prefix": "/nonexistent/conda", "envs_dirs": [], "channels": []}';;
  *) echo "stand-in conda cannot: $*" >&2; exit 1;;
esac
"""


@pytest.fixture
def workflow_with_a_voice(tmp_path, voice_flac):
    workdir = copy_workflow(tmp_path / "wf")
    voices = {"v1": {"source": str(voice_flac), "description": "a test voice"}}
    return workdir, ("--config", f"voices={json.dumps(voices)}")


def planned(stdout: str) -> dict[str, dict[str, str]]:
    """rule -> its resources, from a dry run's job listing (the last job of each rule)."""
    jobs = {}
    for block in stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        found = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        jobs[rule] = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
    return jobs


@pytest.mark.parametrize("profile", ["default", "colab"])
def test_local_profiles_plan_every_step(workflow_with_a_voice, profile):
    workdir, voices = workflow_with_a_voice
    proc = snakemake(workdir, "-n", "--workflow-profile", f"profiles/{profile}", *voices)
    assert f"profiles/{profile}" in proc.stderr + proc.stdout
    jobs = planned(proc.stdout)
    assert {"preflight", "prepare", "encode", "train", "sample", "evaluate", "report"} <= set(jobs)
    assert jobs["train"]["gpu"] == jobs["evaluate"]["gpu"] == "1" and "gpu" not in jobs["prepare"]


def test_the_default_profile_is_used_without_asking(workflow_with_a_voice):
    workdir, voices = workflow_with_a_voice
    proc = snakemake(workdir, "-n", *voices)
    assert "profiles/default" in proc.stderr + proc.stdout


@pytest.mark.slurm  # needs the executor plugin: make test-slurm (requirements-slurm.txt)
def test_slurm_profile_sends_model_rules_to_gpus_in_conda_envs(workflow_with_a_voice, tmp_path):
    workdir, voices = workflow_with_a_voice
    bindir = tmp_path / "bin"
    bindir.mkdir()
    conda = bindir / "conda"
    conda.write_text(FAKE_CONDA)
    conda.chmod(conda.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    proc = snakemake(workdir, "-n", "--workflow-profile", "profiles/slurm", *voices, env=env)
    out = proc.stdout
    assert "Conda environment envs/audio.yaml will be created" in out
    assert "Conda environment envs/train.yaml will be created" in out
    jobs = planned(out)
    assert jobs["train"]["slurm_partition"] == "gpu" and jobs["train"]["gpu"] == "1"
    assert jobs["encode"]["slurm_partition"] == "gpu" and jobs["sample"]["gpu"] == "1"
    assert jobs["evaluate"]["slurm_partition"] == "gpu" and jobs["evaluate"]["gpu"] == "1"
    assert jobs["prepare"]["slurm_partition"] == "cpu" and "gpu" not in jobs["prepare"]
    assert int(jobs["train"]["runtime"]) >= 60


def test_rules_on_the_cpu_ask_for_no_gpu(workflow_with_a_voice):
    workdir, voices = workflow_with_a_voice
    cpu = ("train={'device': 'cpu'}", "evaluate={'device': 'cpu'}")
    jobs = planned(snakemake(workdir, "-n", *voices, *cpu).stdout)
    assert jobs["train"]["gpu"] == jobs["evaluate"]["gpu"] == "0" and jobs["encode"]["gpu"] == "1"
