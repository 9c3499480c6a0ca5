"""Shared fixtures: small generated recordings and temporary copies of the workflow.

The suite is hermetic. Before anything imports huggingface_hub (which reads its settings once,
at import), this module points the Hugging Face cache at an empty folder of its own, sets the
hub offline, and blocks the network in this process and, through ``tests/sitehooks`` on
PYTHONPATH, in every process the tests start (snakemake and its jobs).
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SITEHOOKS = Path(__file__).resolve().parent / "sitehooks"
HF_HOME = Path(tempfile.mkdtemp(prefix="voice-train-tests-hf-"))
atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)
os.environ.update(
    HF_HOME=str(HF_HOME),
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    VOICE_TRAIN_TEST_OFFLINE="1",
    PYTHONPATH=os.pathsep.join(filter(None, [str(SITEHOOKS), os.environ.get("PYTHONPATH")])),
)
os.environ.pop("AUDIOCRAFT_CACHE_DIR", None)
# pytest-xdist runs the suite in several workers: each gets its share of the cores, for the
# snakemake runs it starts (--cores) and for torch in this process and its children.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
CORES = str(
    max(
        1,
        (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        // WORKERS,
    )
)
os.environ["OMP_NUM_THREADS"] = CORES
assert "huggingface_hub" not in sys.modules, "huggingface_hub was imported before the suite set it offline"
_spec = importlib.util.spec_from_file_location("voice_train_sitehooks", SITEHOOKS / "sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))  # blocks this process's network too

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

from voice_train.demo import synthesize_voice  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "rules", "scripts", "config", "envs", "profiles")
DEMO = ("--configfile", "config/demo.yaml")
REPORT = Path("results/report/colab_train_report.txt")


def write_flac(path: Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, format="FLAC", subtype=subtype)
    return path


@pytest.fixture(scope="session")
def voice_48k_stereo() -> np.ndarray:
    """40 s of synthetic speech, 48 kHz stereo."""
    return synthesize_voice(duration_s=40, sample_rate=48000, channels=2, seed=3).audio


@pytest.fixture
def voice_flac(tmp_path: Path, voice_48k_stereo: np.ndarray) -> Path:
    return write_flac(tmp_path / "voice.flac", voice_48k_stereo, 48000)


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow's own files (not results) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake (this interpreter's) in ``workdir``; return the finished process.

    ``env`` entries are added to (and override) this process's environment.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", CORES, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env} if env else None,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def short_demo(workdir: Path) -> Path:
    """A copy of the workflow whose demo recording is 60 s instead of 150 s, trained 16 steps,
    sampled and evaluated on 1 s of audio."""
    copy_workflow(workdir)
    cfg_path = workdir / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["demo"]["duration_s"] = 60
    cfg["train"].update(steps=16, eval_every=8, save_every=8, log_every=4)
    cfg["sample"].update(duration_s=1, prompt_s=0.5)
    cfg["evaluate"].update(samples=2, duration_s=1)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(path)`` once for the whole test run, also across pytest-xdist workers; the path.

    Workers of one run share the parent of their temp folders; a file lock lets the first one
    build while the others wait, then all read the same result (tests copy what they change).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker else root
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory):
    """The short demo run once to the end (once per test run); tests that change things work on
    copies of it. Returns the workflow folder and the finished process's output."""

    def build(path: Path) -> None:
        workdir = short_demo(path / "wf")
        proc = snakemake(workdir, *DEMO)
        (path / "stdout.txt").write_text(proc.stdout)
        (path / "stderr.txt").write_text(proc.stderr)

    path = built_once(tmp_path_factory, "finished_demo", build)
    output = subprocess.CompletedProcess(
        args=["snakemake", *DEMO],
        returncode=0,
        stdout=(path / "stdout.txt").read_text(),
        stderr=(path / "stderr.txt").read_text(),
    )
    return path / "wf", output


@pytest.fixture
def demo_copy(finished_demo, tmp_path):
    """A private copy of the finished demo (results and Snakemake's records included)."""
    workdir, _ = finished_demo
    dest = tmp_path / "wf"
    shutil.copytree(workdir, dest, symlinks=True)
    return dest


def report_fields(workdir: Path) -> dict[str, str]:
    """The report block in ``workdir`` as key -> value."""
    lines = (workdir / REPORT).read_text().splitlines()
    assert lines[0] == "=== COLAB TRAIN REPORT ==="
    return dict(line.split(": ", 1) for line in lines[1:] if line)


@pytest.fixture(scope="session")
def fake_hub() -> dict:
    """The suite's Hugging Face cache, filled with tiny stand-ins of the real job's models
    (``facebook/musicgen-small`` whose codec points to ``facebook/encodec_32khz``, ``t5-base``):
    see ``tests/fakehub.py``. Tests in this process load them as Colab does after its download."""
    from fakehub import build_fake_hub

    return build_fake_hub(HF_HOME, codec="pointer")


# What the test material is made with: a run without one of them stops at once, naming the fix,
# instead of failing test by test in fixtures.
MATERIAL_PACKAGES = {
    "espeakng_loader": "espeakng-loader (libespeak-ng and its voices: the test speech)",
    "pyroomacoustics": "pyroomacoustics (the simulated rooms)",
}


def pytest_sessionstart(session):
    missing = [what for name, what in MATERIAL_PACKAGES.items() if importlib.util.find_spec(name) is None]
    if missing:
        pytest.exit(
            f"voice-train tests: {', '.join(missing)} not installed; "
            "fix: make test (or .venv/bin/pip install -r requirements-dev.txt)",
            returncode=4,
        )


def pytest_sessionfinish(session, exitstatus):
    """A skipped test fails the run: on a machine set up as the README says nothing is skipped.
    ``VOICE_TRAIN_ALLOW_SKIPS=1`` lets a developer skip on purpose (e.g. with xformers installed)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("VOICE_TRAIN_ALLOW_SKIPS") == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(
            f"voice-train tests: {len(skipped)} test(s) skipped; the suite skips nothing on a machine "
            "set up by make test (reasons in the summary below; VOICE_TRAIN_ALLOW_SKIPS=1 allows skips)",
            red=True,
        )
        session.exitstatus = 1
