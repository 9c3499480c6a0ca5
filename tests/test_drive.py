"""A dead Colab runtime loses nothing on Drive (``make test-drive``; left out of the default run).

The work directory is on a Drive-like FUSE mount (``tests/drive/drivefs.py``: no links, chmod
ignored, slow writes, a byte quota counting the bin and revisions, ENOSPC past it), as the Colab
recipe runs it: ``snakemake --directory <the mount>``. The material is the short demo (its
synthetic voice, 60 s; the tiny model), trained 24 steps with a resume point every 8. Each case
kills the whole Snakemake process group with SIGKILL at one instant of a save, runs the README's
commands (``snakemake --unlock``, then ``--rerun-incomplete``) and checks the rerun: the
uninterrupted run's checkpoint sha256, and never training from step 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import CORES, DEMO, ROOT, short_demo

sys.path.insert(0, str(ROOT / "tests" / "drive"))
from mount import drive_mount  # noqa: E402

pytestmark = pytest.mark.drive

VOICE = "demo_voice"
CHECKPOINT = f"results/checkpoints/{VOICE}/tts_voice_train_musicgen_small.pt"
STATE = f"results/state/{VOICE}"
SETUP = ROOT / "tests/drive/setup_fuse.sh"
WRITE_MB_S = 8  # a 33 MB resume save of the tiny model takes ~4 s: time to be killed in it
UNTIL_TRAIN = ("--until", "train")


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    proc = subprocess.run([SETUP], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.strip() or proc.stdout
    with drive_mount(tmp_path_factory.mktemp("drive"), write_mb_s=WRITE_MB_S) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """The short demo's workflow files (on the local disk, as a clone on Colab is), 24 steps."""
    workdir = short_demo(tmp_path_factory.mktemp("wf") / "wf")
    cfg_path = workdir / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    # select_by: loss here: these tests are about saves, and scoring by voice at each validation
    # (tested in test_train.py) would add minutes of generation to every run on the slow mount.
    cfg["train"].update(steps=24, eval_every=8, save_every=8, select_by="loss")
    cfg["evaluate"]["enabled"] = False
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


def command(workflow: Path, work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", CORES, *DEMO, "--directory", str(work), *args]


def snakemake_on(workflow: Path, work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        command(workflow, work, *args), cwd=workflow, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def status_of(work: Path) -> dict:
    path = work / f"results/train/{VOICE}/train_status.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="module")
def uninterrupted(drive, workflow) -> dict:
    """The run to the checkpoint without a fault, on the mount; its status and its work dir."""
    work = drive.mount / "uninterrupted"
    snakemake_on(workflow, work, *UNTIL_TRAIN)
    return {"work": work, "status": status_of(work)}


def fresh_copy(drive, uninterrupted: dict, name: str) -> Path:
    """The uninterrupted run's dataset and tokens in a new folder of the mount, training not yet run."""
    work = drive.mount / name
    shutil.copytree(uninterrupted["work"], work, symlinks=False)
    shutil.rmtree(work / STATE)
    return work


def temp_of(folder: Path, prefix: str) -> Callable[[], bool]:
    """True while a save named ``prefix...`` is being written into ``folder`` (its temp dir has bytes)."""

    def writing() -> bool:
        try:
            for tmp in folder.glob(f".{prefix}*"):
                if tmp.is_dir() and any(f.stat().st_size > 0 for f in tmp.iterdir()):
                    return True
        except OSError:  # a temp dir renamed or removed while we looked
            pass
        return False

    return writing


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def killed_then_rerun(workflow: Path, work: Path, moment: Callable[[], bool]) -> str:
    """Force training, kill it at ``moment``, then the README's commands; the rerun's output."""
    proc = subprocess.Popen(
        command(workflow, work, "--forcerun", "train", *UNTIL_TRAIN),
        cwd=workflow,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    kill_when(proc, moment)
    assert not (work / CHECKPOINT).exists(), "killed before the checkpoint was in place"
    snakemake_on(workflow, work, "--unlock")
    rerun = snakemake_on(workflow, work, "--rerun-incomplete", *UNTIL_TRAIN)
    return rerun.stdout + rerun.stderr


def assert_same_checkpoint(work: Path, uninterrupted: dict) -> None:
    status = status_of(work)
    assert status["status"] == "completed"
    assert status["checkpoint_sha256"] == uninterrupted["status"]["checkpoint_sha256"]
    leftovers = [p.name for p in (work / STATE).iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no temporary file of the killed save survives"


def test_the_mount_behaves_like_drive(drive):
    target = drive.mount / "probe"
    target.write_bytes(b"x" * 1000)
    with pytest.raises(OSError):
        os.link(target, drive.mount / "hard")
    with pytest.raises(OSError):
        os.symlink("probe", drive.mount / "soft")
    os.chmod(target, 0o600)
    assert oct(target.stat().st_mode & 0o777) == "0o644", "chmod is ignored"
    before = drive.stats()
    target.unlink()
    after = drive.stats()
    assert after["bin"] - before["bin"] == 1000 and after["used"] == before["used"], "the bin still counts"
    assert shutil.disk_usage(drive.mount).total <= drive.stats()["quota"]


def test_a_kill_during_a_mid_run_save_resumes_from_the_save_before(drive, workflow, uninterrupted):
    work = fresh_copy(drive, uninterrupted, "mid_save")
    said = killed_then_rerun(workflow, work, temp_of(work / STATE, "resume-000016.pt"))
    assert "resuming from step 8" in said, said
    assert_same_checkpoint(work, uninterrupted)


def test_a_kill_during_the_end_of_training_write_resumes_near_the_end(drive, workflow, uninterrupted):
    work = fresh_copy(drive, uninterrupted, "end_write")
    said = killed_then_rerun(workflow, work, temp_of(work / STATE, "weights-"))
    assert "resuming from step 16" in said, said
    assert_same_checkpoint(work, uninterrupted)


def test_a_kill_during_the_export_exports_again_without_training(drive, workflow, uninterrupted):
    work = fresh_copy(drive, uninterrupted, "export")
    checkpoints = work / CHECKPOINT
    said = killed_then_rerun(workflow, work, temp_of(checkpoints.parent, checkpoints.name))
    assert "training finished earlier (step 24)" in said and "resuming" not in said, said
    assert_same_checkpoint(work, uninterrupted)
    kept = sorted(p.name for p in (work / STATE).glob("*.pt"))
    assert len(kept) == 2 and kept[0] == "finished.pt" and kept[1].startswith("weights-"), "the state shrank"


def test_a_full_drive_keeps_the_previous_save_names_the_bytes_and_a_rerun_finishes(
    drive, workflow, uninterrupted
):
    work = fresh_copy(drive, uninterrupted, "full")
    proc = subprocess.Popen(
        command(workflow, work, "--forcerun", "train", *UNTIL_TRAIN),
        cwd=workflow,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    first_save = work / STATE / "resume-000008.pt"
    deadline = time.monotonic() + 300
    while not first_save.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the first save never came"
        time.sleep(0.02)
    drive.set_quota(drive.stats()["used"] + 8_000_000)  # the Drive fills up: 8 MB left, a save is 33 MB
    output, _ = proc.communicate(timeout=300)
    drive.set_quota(15 * 10**9)
    assert proc.returncode != 0, "training could not finish on a full Drive"
    refused = [  # the console's line (the job's log has it too, which Snakemake may show)
        line
        for line in output.splitlines()
        if line.startswith("voice-train:") and "step 16 was not saved" in line
    ]
    assert len(refused) == 1 and "MB" in refused[0] and "free" in refused[0], output
    assert "the save of step 8 is kept" in refused[0]
    assert "the finished training could not be saved" in output and "resume point of step 8 is kept" in output
    report = (work / "results/report/colab_train_report.txt").read_text()
    assert "objective_status: failed" in report and "first_failed_step: train" in report
    assert [p.name for p in (work / STATE).glob("*.pt")] == ["resume-000008.pt"]

    snakemake_on(workflow, work, "--unlock")
    said = snakemake_on(workflow, work, "--rerun-incomplete", *UNTIL_TRAIN)
    assert "resuming from step 8" in said.stdout + said.stderr
    assert_same_checkpoint(work, uninterrupted)
