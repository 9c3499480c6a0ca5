"""Bad recordings and odd paths through the whole workflow: refused in one clear line, with
no marker or dataset written, the user's file untouched, and a report that names the cause."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import copy_workflow, report_fields, snakemake, write_flac

pytestmark = pytest.mark.workflow

# Small test files: let the size and duration limits pass so each case meets its own check.
LENIENT = ("preflight={'min_bytes': 1000, 'min_duration_s': 5}",)


def run_voice(workdir: Path, source: Path, *config: str, check: bool = False, until: str | None = None):
    voices = json.dumps({"v1": {"source": str(source), "description": "a test voice"}})
    args = ["--config", f"voices={voices}", *config]
    if until:
        args += ["--until", until]
    return snakemake(workdir, *args, check=check)


def random_bytes(path: Path, voice: np.ndarray) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(300_000))


def wav_named_flac(path: Path, voice: np.ndarray) -> None:
    sf.write(str(path), voice[: 48000 * 10], 48000, format="WAV")


def mp3_named_flac(path: Path, voice: np.ndarray) -> None:
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + np.random.default_rng(1).bytes(200_000))


def truncated(path: Path, voice: np.ndarray) -> None:
    write_flac(path, voice, 48000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def silence(path: Path, voice: np.ndarray) -> None:
    write_flac(path, np.zeros((48000 * 20, 1), np.float32), 48000)


def two_seconds(path: Path, voice: np.ndarray) -> None:
    write_flac(path, voice[: 48000 * 2], 48000)


def empty(path: Path, voice: np.ndarray) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (empty, "empty"),
        (random_bytes, "not audio"),
        (wav_named_flac, "WAV"),
        (mp3_named_flac, "MP3"),
        (truncated, "decoding failed part-way"),
        (silence, "silence"),
        (two_seconds, "min_duration_s"),
    ],
)
def test_a_bad_recording_is_refused_in_one_line(tmp_path, voice_48k_stereo, make, cause):
    workdir = copy_workflow(tmp_path / "wf")
    source = tmp_path / "in" / "voice.flac"
    source.parent.mkdir()
    make(source, voice_48k_stereo)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    proc = run_voice(workdir, source, *LENIENT)
    assert proc.returncode != 0
    lines = [
        line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("voice-train error:")
    ]
    assert lines, "one voice-train error line"
    assert str(source) in lines[0] and "; fix: " in lines[0] and cause in lines[0]
    fields = report_fields(workdir)
    assert fields["objective_status"] == "failed" and fields["first_failed_step"] == "preflight"
    assert cause in fields["root_cause"] and fields["next_unblock_action"] not in ("N/A", "none")
    assert not (workdir / "results/preflight/v1.json").exists(), "no marker"
    assert not (workdir / "results/dataset").exists(), "no dataset"
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before, "the user's file is untouched"


def test_a_path_with_spaces_and_non_ascii_characters_works(tmp_path, voice_48k_stereo):
    workdir = copy_workflow(tmp_path / "wf")
    source = write_flac(tmp_path / "my recordings" / "Zoë's voice – take 1.flac", voice_48k_stereo, 48000)
    run_voice(workdir, source, *LENIENT, check=True, until="prepare")
    manifest = json.loads((workdir / "results/dataset/v1/voice_dataset_manifest.json").read_text())
    assert manifest["source"] == str(source) and manifest["count"] >= 2


def test_a_clipped_recording_is_prepared_with_a_warning(tmp_path, voice_48k_stereo):
    workdir = copy_workflow(tmp_path / "wf")
    loud = np.clip(voice_48k_stereo * 20, -1, 1)
    source = write_flac(tmp_path / "clipped.flac", loud, 48000)
    run_voice(workdir, source, *LENIENT, check=True, until="prepare")
    marker = json.loads((workdir / "results/preflight/v1.json").read_text())
    assert marker["clipped_ratio"] > 0.001 and any("clipped" in w for w in marker["warnings"])
    assert (workdir / "results/dataset/v1/voice_dataset_manifest.json").exists()


@pytest.mark.parametrize("name", ["../evil", "a/b", "x y", ""])
def test_a_voice_name_that_is_not_a_plain_name_is_refused_before_any_job(tmp_path, voice_flac, name):
    workdir = copy_workflow(tmp_path / "wf")
    voices = json.dumps({name: {"source": str(voice_flac), "description": "x"}})
    proc = snakemake(workdir, "--config", f"voices={voices}", check=False)
    assert proc.returncode != 0 and "voices" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


_PREPARE_RSS = """
import json, sys
sys.path.insert(0, "scripts")
from voice_train.preflight import PreflightSettings, run_preflight
from voice_train.prepare import PrepareSettings, prepare_dataset
source, out = sys.argv[1], sys.argv[2]
marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
manifest = prepare_dataset(source, marker, "v1", "a test voice", out, PrepareSettings(), threads=2)
# VmHWM is this process's own peak; ru_maxrss would also count what pytest had when it forked.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024, "kept_s": manifest["summary"]["kept_duration_s"]}))
"""


def _long_recording(path: Path, voice: np.ndarray, minutes: float) -> Path:
    """``minutes`` of the test voice (8 kHz mono: the cheapest accepted format), written in blocks."""
    mono = voice.mean(axis=1)[::6].astype(np.float32)  # 48 kHz -> 8 kHz (the voice is band-limited enough)
    frames = int(minutes * 60 * 8000)
    with sf.SoundFile(str(path), "w", samplerate=8000, channels=1, format="FLAC", subtype="PCM_16") as fh:
        for start in range(0, frames, len(mono)):
            fh.write(mono[: min(len(mono), frames - start)])
    return path


def test_a_long_recording_keeps_memory_flat(tmp_path, voice_48k_stereo):
    """Peak memory of preflight + prepare grows by less than 25 MB from 5 to 25 minutes.

    Holding the decoded recording whole (8 kHz float32) would add 38 MB more at 25 minutes than
    at 5 (at prepare's 32 kHz, 154 MB); the level arrays, the only things that should grow, add
    ~1.5 MB. For 3 hours: bench/prepare_bench.py --rss-minutes 10 180 (bench/README.md)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    peaks = {}
    for minutes in (5, 25):
        source = _long_recording(tmp_path / f"{minutes}.flac", voice_48k_stereo, minutes)
        proc = subprocess.run(
            [sys.executable, "-c", _PREPARE_RSS, str(source), str(tmp_path / f"out{minutes}")],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["kept_s"] > minutes * 60 * 0.5, "most of the recording became clips"
        peaks[minutes] = result["peak_mb"]
        source.unlink()
    # Measured (2026-11-30, this 2-core VM): 196 MB at 5 minutes, 200 MB at 25 (198 at 10, 201 at 60).
    assert peaks[25] - peaks[5] < 25, peaks
