"""Shared fixtures: small generated recordings and temporary copies of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice_train.demo import synthesize_voice

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "rules", "scripts", "config", "envs", "profiles")


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
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env} if env else None,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
