"""The cluster path on a real Slurm: the demo through ``--executor slurm`` with profiles/slurm-venv.

``make test-slurm`` starts a one-node Slurm on this machine (tests/slurm/start_slurm.sh: partitions
``cpu`` and ``gpu`` on this host, one stand-in GPU) and runs ``pytest -m slurm``. Where Slurm cannot
be had (not root, no packages), these tests skip with the script's reason.

The expensive material is made once per test run and shared; each test says what it reads:

* ``local_run``: two voices of the short demo run locally, up to their checkpoints: the reference.
* ``cancelled_run``: the same two voices through Slurm. When ``demo_voice`` has saved its training
  state at step 8 of 16, its training job is scancelled; ``second_voice`` goes on. The run ends
  failed. What the tests read of it is kept before the rerun below changes the folder.
* ``resumed_run``: the documented rerun in that folder (``snakemake --unlock``, then the same
  command): it redoes demo_voice's training from its saved state and finishes both voices.
* ``failing_run``: a copy of the cancelled run's folder whose training asks for a GPU that is not
  there; it runs beside ``resumed_run``.

The same command runs every time, with two options for this 2-core machine: ``--max-threads 1``, so
that the two voices' jobs run side by side, and status checks from 1 s after a job ends (the
plugin's default, 40 s, is for clusters with many users).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import CORES, DEMO, ROOT, report_fields, short_demo
from voice_train.cluster import Request, Size, parse_nodes, unrunnable

START_SLURM = ROOT / "tests/slurm/start_slurm.sh"
SKIPPED = 77  # start_slurm.sh: Slurm cannot be had on this machine
JOBCOMP = Path("/var/log/slurm/jobcomp.log")  # start_slurm.sh: every finished job, one line each
PROFILE = ("--workflow-profile", "profiles/slurm-venv")
THREADS = ("--max-threads", "1")
MACHINE = (*THREADS, "--slurm-init-seconds-before-status-checks", "1")
VOICES = ("demo_voice", "second_voice")
MODEL_RULES = {"encode", "train", "sample", "evaluate"}  # the profile sends them to the gpu partition
CHECKPOINT = "results/checkpoints/{voice}/tts_voice_train_musicgen_small.pt"
TIMEOUT = 900
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+/rule_(\w+)/([\w-]*)/\d+\.log)\)")

slurm = pytest.mark.slurm


def ends_with_the_block(stdout: str, line: str) -> bool:
    """The report block is the last thing printed (its last key is voice_verdict) and has ``line``."""
    block = stdout[stdout.rindex("=== COLAB TRAIN REPORT ===") :]
    return stdout.rstrip().splitlines()[-1].startswith("voice_verdict: ") and f"\n{line}\n" in block


@pytest.fixture(scope="session")
def cluster() -> None:
    """A running one-node Slurm (started, or found running, by start_slurm.sh)."""
    proc = subprocess.run([START_SLURM], capture_output=True, text=True, timeout=600)
    if proc.returncode == SKIPPED:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, f"start_slurm.sh failed:\n{proc.stdout}{proc.stderr}"


def two_voices(workdir: Path) -> Path:
    """The short demo with a second voice, read from the same recording."""
    short_demo(workdir)
    cfg_path = workdir / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    demo = cfg["voices"]["demo_voice"]
    cfg["voices"] = {voice: dict(demo) for voice in VOICES}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


def command(*args: str) -> list[str]:
    """The user's command on this machine: the profile, the demo config, the two machine options."""
    return [sys.executable, "-m", "snakemake", *PROFILE, *DEMO, *MACHINE, *args]


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT)


class Background:
    """A snakemake run in the background, in its own process group; its output beside its folder."""

    def __init__(self, workdir: Path, args: list[str]):
        self.workdir = workdir
        self.out, self.err = workdir.parent / "stdout.txt", workdir.parent / "stderr.txt"
        with open(self.out, "w") as stdout, open(self.err, "w") as stderr:
            self.proc = subprocess.Popen(
                args, cwd=workdir, stdout=stdout, stderr=stderr, start_new_session=True
            )

    def result(self) -> subprocess.CompletedProcess:
        """The finished run (waited for, at most TIMEOUT): its exit status and output."""
        try:
            self.proc.wait(timeout=TIMEOUT)
        finally:
            self.stop()
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, self.out.read_text(), self.err.read_text()
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def sha256_of(workdir: Path, voice: str) -> str:
    return json.loads((workdir / f"results/train/{voice}/train_status.json").read_text())["checkpoint_sha256"]


@dataclass
class SlurmJob:
    rule: str
    wildcards: str
    log: Path
    partition: str
    state: str
    start: datetime
    end: datetime


def slurm_jobs(stderr: str) -> dict[str, SlurmJob]:
    """Slurm job id -> the job, for each job the run submitted: rule and log from Snakemake's
    output, partition, state and times from Slurm's own record of the finished job."""
    records = {}
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        records[fields["JobId"]] = fields
    jobs = {}
    for jobid, log, rule, wildcards in SUBMITTED.findall(stderr):
        record = records[jobid]
        jobs[jobid] = SlurmJob(
            rule,
            wildcards,
            Path(log),
            record["Partition"],
            record["JobState"],
            datetime.fromisoformat(record["StartTime"]),
            datetime.fromisoformat(record["EndTime"]),
        )
    return jobs


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """The two voices run locally (``--cores``, no profile) up to their checkpoints, with the Slurm
    runs' threads: CPU training gives the same bytes only with the same thread count. It runs in
    the background while the Slurm jobs of ``cancelled_run`` wait for their status checks."""
    workdir = two_voices(tmp_path_factory.mktemp("local") / "wf")
    targets = [CHECKPOINT.format(voice=voice) for voice in VOICES]
    local = Background(
        workdir, [sys.executable, "-m", "snakemake", *targets, "--cores", CORES, *DEMO, *THREADS]
    )
    yield local
    local.stop()


@dataclass
class CancelledRun:
    workdir: Path
    proc: subprocess.CompletedProcess
    cancelled: str  # the Slurm job id of demo_voice's training
    report: str
    slurm_log: str  # the cancelled job's Slurm log
    train_log: str  # demo_voice's train log after the cancel


def training_saved(workdir: Path, voice: str, step: int) -> bool:
    """Whether the voice's training goes on past a saved state at ``step`` (its status mirror says so)."""
    mirror = workdir / f"results/state/{voice}/train_status.json"
    status = json.loads(mirror.read_text()) if mirror.exists() else {}
    return status.get("status") == "running" and status.get("step", 0) >= step


def running_job(rule: str, voice: str) -> str | None:
    """The Slurm job id of the running job of ``rule`` for ``voice``, from squeue (the plugin puts
    rule and wildcards in each job's comment)."""
    listing = subprocess.run(
        ["squeue", "--noheader", "--states=RUNNING", "--format=%i %k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines():
        jobid, comment = line.split(maxsplit=1)
        if comment == f"rule_{rule}_wildcards_{voice}":
            return jobid
    return None


@pytest.fixture(scope="session")
def cancelled_run(cluster, local_run, tmp_path_factory) -> CancelledRun:
    """The two voices through Slurm; demo_voice's training job scancelled once its state at step 8
    is saved (``local_run`` is asked for first, so that it runs meanwhile)."""
    workdir = two_voices(tmp_path_factory.mktemp("slurm") / "wf")
    slurm_run = Background(workdir, command())
    deadline = time.monotonic() + TIMEOUT
    while not (training_saved(workdir, "demo_voice", 8) and (jobid := running_job("train", "demo_voice"))):
        if slurm_run.proc.poll() is not None or time.monotonic() > deadline:
            slurm_run.stop()
            pytest.fail(f"demo_voice's training never went past step 8:\n{slurm_run.err.read_text()}")
        time.sleep(0.1)
    subprocess.run(["scancel", jobid], check=True)
    proc = slurm_run.result()
    return CancelledRun(
        workdir,
        proc,
        jobid,
        (workdir / "results/report/colab_train_report.txt").read_text(),
        slurm_jobs(proc.stderr)[jobid].log.read_text(),
        (workdir / "results/logs/train/demo_voice.log").read_text(),
    )


@pytest.fixture(scope="session")
def failing_run(cancelled_run, tmp_path_factory):
    """A copy of ``cancelled_run``'s folder with one voice and train.device cuda:7 (no such GPU):
    only that training job runs, in the gpu partition with the stand-in GPU, and fails at once.
    It runs in the background beside ``resumed_run``."""
    workdir = tmp_path_factory.mktemp("failing") / "wf"
    shutil.copytree(cancelled_run.workdir, workdir, symlinks=True)
    cfg_path = workdir / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["voices"] = {"demo_voice": cfg["voices"]["demo_voice"]}
    cfg["train"]["device"] = "cuda:7"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    failing = Background(workdir, command())
    yield failing
    failing.stop()


@pytest.fixture(scope="session")
def resumed_run(cancelled_run, failing_run) -> subprocess.CompletedProcess:
    """The README's rerun after a kill, in the cancelled run's folder."""
    workdir = cancelled_run.workdir
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--unlock", *DEMO], cwd=workdir, check=True, timeout=120
    )
    return run(workdir)


def blocks(report: str) -> dict[str, dict[str, str]]:
    """voice -> its block's fields, from a report file of several voices."""
    found = {}
    for block in report.split("=== COLAB TRAIN REPORT ===\n")[1:]:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        found[fields["voice"]] = fields
    return found


@slurm
def test_every_rule_but_the_report_runs_as_a_slurm_job_in_its_partition(cancelled_run, resumed_run):
    """Reads the jobs of ``cancelled_run`` and ``resumed_run`` (Snakemake's output, Slurm's records)."""
    jobs = {**slurm_jobs(cancelled_run.proc.stderr), **slurm_jobs(resumed_run.stderr)}
    ran = set(re.findall(r"^(?:local)?rule (\w+):", cancelled_run.proc.stderr + resumed_run.stderr, re.M))
    assert {job.rule for job in jobs.values()} == ran - {"all", "report"}
    assert {"demo_source", "model", "preflight", "prepare", *MODEL_RULES} <= ran
    # The report rule is a local rule: a second's work on the login node, not a queued job.
    assert "localrule report:" in resumed_run.stderr
    for jobid, job in jobs.items():
        assert job.partition == ("gpu" if job.rule in MODEL_RULES else "cpu"), (jobid, job)


@slurm
def test_two_voices_run_as_parallel_slurm_jobs(cancelled_run):
    """Reads Slurm's records of ``cancelled_run``'s jobs: for a while, jobs of both voices ran at once
    (each voice's chain runs at its own pace, so which of their jobs met varies from run to run)."""
    jobs = [job for job in slurm_jobs(cancelled_run.proc.stderr).values() if job.rule != "demo_source"]
    first, second = ([job for job in jobs if job.wildcards == voice] for voice in VOICES)
    together = sum(
        max(0.0, (min(a.end, b.end) - max(a.start, b.start)).total_seconds()) for a in first for b in second
    )
    timeline = "\n".join(f"{job.start:%T}-{job.end:%T} {job.rule} {job.wildcards}" for job in jobs)
    assert together >= 10, f"jobs of the two voices ran together for {together} s only:\n{timeline}"


@slurm
def test_a_cancelled_job_ends_the_run_with_the_report_block_and_its_slurm_log(cancelled_run):
    """Reads ``cancelled_run``: its output, its report, the cancelled job's Slurm log."""
    proc = cancelled_run.proc
    assert proc.returncode != 0
    assert proc.stdout.rstrip().endswith(cancelled_run.report.rstrip()), "the report block comes last"
    report = blocks(cancelled_run.report)
    assert report["demo_voice"]["objective_status"] == "failed"
    assert report["demo_voice"]["first_failed_step"] == "train"
    assert report["demo_voice"]["failed_rule_log"] == "results/logs/train/demo_voice.log"
    assert report["second_voice"]["objective_status"] == "completed"
    # Snakemake names the job's Slurm log beside the rule's log; Slurm wrote there why it ended.
    error = proc.stderr[proc.stderr.index("Error in rule train:") :]
    assert f"SLURM-job '{cancelled_run.cancelled}' failed, SLURM status is: 'CANCELLED'" in error
    assert f"rule_train/demo_voice/{cancelled_run.cancelled}.log" in error
    assert (
        f"JOB {cancelled_run.cancelled} ON" in cancelled_run.slurm_log
        and "CANCELLED" in cancelled_run.slurm_log
    )


@slurm
def test_the_documented_rerun_resumes_and_ends_at_the_checkpoints_of_a_local_run(
    cancelled_run, resumed_run, local_run
):
    """Reads ``resumed_run`` (its output, report and train log) and ``local_run``'s checkpoints.
    second_voice ran through Slurm uninterrupted; demo_voice was cancelled and resumed."""
    workdir = cancelled_run.workdir
    assert "starting clean" in cancelled_run.train_log
    assert "resuming from step 8" in (workdir / "results/logs/train/demo_voice.log").read_text()
    assert ends_with_the_block(resumed_run.stdout, "failed_rule_log: N/A")
    report = blocks((workdir / "results/report/colab_train_report.txt").read_text())
    assert {voice: fields["objective_status"] for voice, fields in report.items()} == dict.fromkeys(
        VOICES, "completed"
    )
    local = local_run.result()
    assert local.returncode == 0, local.stderr
    for voice in VOICES:
        assert report[voice]["checkpoint_sha256"] == sha256_of(local_run.workdir, voice), voice


@slurm
def test_logs_are_where_the_readme_says(cancelled_run, resumed_run):
    """Reads ``resumed_run``'s folder: a log per rule and voice; Slurm logs only of failed jobs."""
    logs = cancelled_run.workdir / "results/logs"
    for rule in ("preflight", "prepare", *MODEL_RULES):
        for voice in VOICES:
            assert (logs / rule / f"{voice}.log").exists(), (rule, voice)
    assert "train second_voice: done" in (logs / "train/second_voice.log").read_text()
    assert (logs / "model/tiny.log").exists() and (logs / "report/report.log").exists()
    slurm_logs = cancelled_run.workdir / ".snakemake/slurm_logs"
    kept = sorted(path.relative_to(slurm_logs) for path in slurm_logs.rglob("*.log"))
    assert kept == [Path(f"rule_train/demo_voice/{cancelled_run.cancelled}.log")]


@slurm
def test_a_failing_job_ends_the_run_with_the_report_block_naming_it(failing_run):
    """Reads ``failing_run``: its output, its report, the failed job's Slurm log."""
    proc = failing_run.result()
    assert proc.returncode != 0
    jobs = slurm_jobs(proc.stderr)
    assert [(job.rule, job.partition, job.state) for job in jobs.values()] == [("train", "gpu", "FAILED")]
    fields = report_fields(failing_run.workdir)
    assert ends_with_the_block(proc.stdout, f"failed_rule_log: {fields['failed_rule_log']}")
    assert fields["objective_status"] == "failed" and fields["first_failed_step"] == "train"
    assert "no CUDA GPU is visible" in fields["root_cause"]
    assert fields["failed_rule_log"] == "results/logs/train/demo_voice.log"
    [job] = jobs.values()
    assert str(job.log) in proc.stderr[proc.stderr.index("Error in rule train:") :]
    assert "Error in rule train" in job.log.read_text(), "the Slurm log holds the job's own account"


@slurm
def test_a_job_no_node_can_run_stops_the_run_before_anything_is_submitted(cluster, tmp_path):
    """A fresh copy of the short demo, run without --max-threads, so that train asks for its own 4
    threads as CPUs (or one more than this cluster's node has, on a larger machine); on this 2-core
    machine Slurm kept such a job pending forever."""
    workdir = short_demo(tmp_path / "wf")
    cpus = int(subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True).stdout)
    too_many = max(4, cpus + 1)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *PROFILE, *DEMO, "--set-threads", f"train={too_many}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert (
        f"voice-train cluster: rule train asks partition gpu for {too_many} CPUs, "
        f"but its largest node has {cpus} CPUs; fix: --max-threads {cpus}"
    ) in proc.stderr
    assert "submitted with SLURM jobid" not in proc.stderr


def test_the_two_slurm_profiles_differ_only_in_how_software_is_deployed():
    """profiles/slurm (conda envs) and profiles/slurm-venv (one shared environment) stay in step."""
    conda, venv = (
        yaml.safe_load((ROOT / f"profiles/{name}/config.yaml").read_text())
        for name in ("slurm", "slurm-venv")
    )
    assert {
        key: value for key, value in conda.items() if not key.startswith(("software-deployment", "conda"))
    } == venv
    assert conda["software-deployment-method"] == "conda"


def test_the_nodes_of_each_partition_are_read_from_sinfo():
    nodes, default = parse_nodes(
        "cpu* 2 24105 (null)\ngpu 8 64000 gpu:a100:4(S:0-1)\ngpu 16 128000 gpu:1,gpu:t4:2\n"
    )
    assert default == "cpu"
    assert nodes == {"cpu": [Size(2, 24105, 0)], "gpu": [Size(8, 64000, 4), Size(16, 128000, 3)]}


@pytest.mark.parametrize(
    ("asks", "problem"),
    [
        (
            Size(4, 2000, 0),
            "asks partition gpu for 4 CPUs, but its largest node has 2 CPUs; fix: --max-threads 2",
        ),
        (
            Size(2, 32000, 0),
            "for 32000 MB of memory, but its largest node has 24000 MB of memory; fix: set-res",
        ),
        (Size(1, 1000, 2), "for 2 GPUs, but its largest node has 1 GPUs; fix: a partition with GPUs as"),
        (Size(2, 24000, 1), None),
    ],
)
def test_a_request_no_node_can_meet_is_named_with_its_limit_and_fix(asks, problem):
    nodes = {"cpu": [Size(2, 24000, 0)], "gpu": [Size(2, 24000, 1)]}
    found = unrunnable([Request("train", "gpu", asks)] * 2, nodes, "cpu")  # one line per rule
    if problem is None:
        assert found == []
    else:
        [line] = found
        assert line.startswith("rule train ") and problem in line


def test_an_unknown_partition_and_requests_no_single_node_meets_are_named():
    nodes = {"cpu": [Size(8, 4000, 0), Size(2, 64000, 0)]}
    found = unrunnable(
        [Request("prepare", "batch", Size(1, 1000, 0)), Request("train", None, Size(8, 64000, 0))],
        nodes,
        "cpu",
    )
    assert found == [
        "rule prepare goes to partition batch, which sinfo does not list (cpu); fix: slurm_partition for "
        "prepare in the profile",
        "rule train asks partition cpu for 8 CPUs, 64000 MB and 0 GPUs, which no node of it has at once; "
        "fix: smaller requests in the profile",
    ]
