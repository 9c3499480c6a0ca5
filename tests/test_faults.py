"""Faults: a job killed with SIGKILL mid-way, a second run on the same directory, corrupt files.

Each kill test forces one rule of a finished demo to run again, kills the whole Snakemake
process group while that job is busy, and then runs the commands the README documents
(``snakemake --unlock``, then ``snakemake --rerun-incomplete``). The run must finish with the
same checkpoint as the uninterrupted demo (CPU training is deterministic) and leave no
temporary files behind. For prepare, encode and train the rerun stops after the killed rule,
whose remade outputs must equal the uninterrupted demo's (the sample case runs to the report).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CORES, DEMO, report_fields, snakemake

pytestmark = pytest.mark.workflow

VOICE = "demo_voice"
CHECKPOINT = Path(f"results/checkpoints/{VOICE}/tts_voice_train_musicgen_small.pt")


SLOWDOWN = Path(__file__).parent / "sitehooks"  # its sitecustomize slows chosen calls down
# What each killed job is slowed down by, so that it is still busy when the moment to kill it
# is seen, on a machine of any speed: prepare writes each clip, encode reads each, sample
# writes two WAVs. Training saves its state at step 8 of 16 and needs no help.
SLOW = {"prepare": "soundfile.write=0.4", "encode": "soundfile.read=0.3", "sample": "soundfile.write=1.5"}

# An output each rule writes last: absent after the kill, so the job was killed mid-way.
UNFINISHED = {
    "prepare": f"results/dataset/{VOICE}/voice_dataset_manifest.json",
    "encode": f"results/tokens/{VOICE}.npz",
    "train": str(CHECKPOINT),
    "sample": f"results/samples/{VOICE}/continuation.wav",
}


def dataset_digest(workdir: Path) -> list[tuple[str, str]]:
    manifest = json.loads((workdir / f"results/dataset/{VOICE}/voice_dataset_manifest.json").read_text())
    return [(Path(e["target"]).name, e["sha256"]) for e in manifest["entries"]]


def tokens_digest(workdir: Path) -> tuple[bytes, bytes]:
    with np.load(workdir / f"results/tokens/{VOICE}.npz") as data:
        return data["codes"].tobytes(), data["offsets"].tobytes()


def checkpoint_digest(workdir: Path) -> bytes:
    return (workdir / CHECKPOINT).read_bytes()


# prepare, encode and train: the documented rerun goes on through the rules after them, which the
# sample case runs to the end; here it stops after the killed rule and compares what it remade.
UNTIL = {"prepare": dataset_digest, "encode": tokens_digest, "train": checkpoint_digest}


@pytest.fixture
def faults_copy(demo_copy: Path) -> Path:
    """The finished demo's copy with rule evaluate off: it lies downstream of every fault here and
    would add ~20 s to each rerun. Its first run after this only writes a "skipped" json."""
    cfg_path = demo_copy / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["evaluate"]["enabled"] = False
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return demo_copy


def start(workdir: Path, *args: str, slow: str = "") -> subprocess.Popen:
    env = dict(os.environ)
    if slow:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SLOWDOWN), env.get("PYTHONPATH")]))
        env["VOICE_TRAIN_TEST_SLOW"] = slow
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", CORES, *DEMO, *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the job's Python too
        env=env,
    )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def leftovers(workdir: Path) -> list[Path]:
    return [p for p in (workdir / "results").rglob(".*") if p.name != ".snakemake_timestamp"]


def mid_job(workdir: Path, rule: str) -> Callable[[], bool]:
    """The moment to kill ``rule``'s job: while it is busy (its old log was removed before)."""
    results = workdir / "results"
    if rule == "prepare":  # clips are being written into the staging directory
        return lambda: any((results / "dataset" / VOICE).glob(".clips.*/*.flac"))
    if rule == "train":  # the state of step 8 (of 16) is saved and training goes on

        def training() -> bool:
            mirror = results / "state" / VOICE / "train_status.json"
            status = json.loads(mirror.read_text()) if mirror.exists() else {}
            return status.get("status") == "running" and status.get("step", 0) >= 8

        return training
    if rule == "sample":  # the first WAV is written, the second is not
        return lambda: (results / "samples" / VOICE / "text.wav").exists()
    log = results / "logs" / rule / f"{VOICE}.log"
    began: list[float] = []

    def encoding() -> bool:  # the job has started and had a second to load the model
        if not began and log.exists() and log.stat().st_size > 0:
            began.append(time.monotonic())
        return bool(began) and time.monotonic() - began[0] > 1.0

    return encoding


@pytest.mark.parametrize("rule", ["prepare", "encode", "train", "sample"])
def test_a_job_killed_mid_way_is_redone_by_the_documented_commands(finished_demo, faults_copy, rule):
    expected_sha = json.loads((finished_demo[0] / f"results/train/{VOICE}/train_status.json").read_text())[
        "checkpoint_sha256"
    ]
    if rule == "train":
        # Train from step 0 again, so that the kill lands between two saved states.
        for item in (faults_copy / "results/state" / VOICE).iterdir():
            item.unlink()
    # The finished demo's log and samples would signal the moment to kill too early.
    (faults_copy / "results/logs" / rule / f"{VOICE}.log").unlink()
    if rule == "sample":
        for item in (faults_copy / "results/samples" / VOICE).iterdir():
            item.unlink()
    proc = start(faults_copy, "--forcerun", rule, slow=SLOW.get(rule, ""))
    kill_when(proc, mid_job(faults_copy, rule))
    assert not (faults_copy / UNFINISHED[rule]).exists(), f"{rule} was killed before it finished"
    if rule == "train":
        status = json.loads((faults_copy / "results/state" / VOICE / "train_status.json").read_text())
        assert status["status"] == "running" and status["step"] < 16, "killed mid-training"

    # A plain rerun is refused: by the stale lock, or because of the half-written outputs.
    refused = snakemake(faults_copy, *DEMO, check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and ("cannot be locked" in said or "Incomplete files" in said)
    snakemake(faults_copy, *DEMO, "--unlock")
    if rule in UNTIL:  # the killed job's own outputs, redone, must equal the uninterrupted run's
        rerun = snakemake(faults_copy, *DEMO, "--rerun-incomplete", "--until", rule)
        assert UNTIL[rule](faults_copy) == UNTIL[rule](finished_demo[0])
        assert leftovers(faults_copy) == [], "no temporary file of the killed job survives"
        if rule == "train":
            assert "resuming from step 8" in rerun.stderr + rerun.stdout
            status = json.loads((faults_copy / f"results/train/{VOICE}/train_status.json").read_text())
            assert status["status"] == "completed" and status["checkpoint_sha256"] == expected_sha
        return
    snakemake(faults_copy, *DEMO, "--rerun-incomplete")

    assert report_fields(faults_copy)["objective_status"] == "completed"
    assert report_fields(faults_copy)["checkpoint_sha256"] == expected_sha
    assert leftovers(faults_copy) == [], "no temporary file of the killed job survives"


def test_a_second_run_on_the_same_directory_is_refused_while_the_first_goes_on(faults_copy):
    # The first run holds the directory for seconds with a light job: preflight, slowed down.
    marker = faults_copy / f"results/preflight/{VOICE}.json"
    before = marker.read_bytes()
    marker.unlink()
    first = start(faults_copy, "--forcerun", "preflight", "--until", "preflight", slow="soundfile.info=3")
    try:
        log = faults_copy / "results/logs/preflight" / f"{VOICE}.log"
        deadline = time.monotonic() + 120
        while not log.exists() or (faults_copy / ".snakemake/locks").exists() is False:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = snakemake(faults_copy, *DEMO, "--forcerun", "report", check=False)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
        assert first.poll() is None, "the first run was still busy when the second was refused"
    finally:
        assert first.wait(timeout=300) == 0, "the first run finishes undisturbed"
    assert json.loads(marker.read_bytes()) == json.loads(before), "and writes what it would have alone"


def test_a_corrupt_checkpoint_is_reported_and_not_used(faults_copy):
    checkpoint = faults_copy / CHECKPOINT
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    proc = snakemake(faults_copy, *DEMO, check=False)  # a newer checkpoint: sample and report rerun
    assert proc.returncode != 0
    fields = report_fields(faults_copy)
    # (evaluate checks it the same way: tests/test_evaluate.py; it is off here)
    assert fields["objective_status"] == "failed" and fields["first_failed_step"] == "sample"
    assert "not the checkpoint that train_status.json recorded" in fields["root_cause"]
    assert fields["next_unblock_action"] == "rebuild it with: snakemake --cores all --forcerun train"
    snakemake(faults_copy, *DEMO, "--forcerun", "train")
    assert report_fields(faults_copy)["objective_status"] == "completed"
    assert checkpoint.read_bytes() == data


def test_a_corrupt_token_cache_is_refused_by_training(faults_copy):
    tokens = faults_copy / f"results/tokens/{VOICE}.npz"
    tokens.write_bytes(tokens.read_bytes()[:1000])
    proc = snakemake(faults_copy, *DEMO, check=False)
    assert proc.returncode != 0
    fields = report_fields(faults_copy)
    assert fields["objective_status"] == "failed" and fields["first_failed_step"] == "train"
    assert "tokens" in fields["root_cause"] and "encode" in fields["next_unblock_action"]


def test_the_slowdown_hook_reaches_a_job_python(tmp_path):
    """The kill tests rely on it: a Python started with it on PYTHONPATH sleeps before each call."""
    code = (
        "import time, numpy, soundfile\n"
        "t = time.monotonic()\n"
        f"soundfile.write({str(tmp_path / 'x.wav')!r}, numpy.zeros(10), 8000)\n"
        "print(time.monotonic() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SLOWDOWN), "VOICE_TRAIN_TEST_SLOW": "soundfile.write=0.5"}
    took = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(took.stdout) >= 0.5
