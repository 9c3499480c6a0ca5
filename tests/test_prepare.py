"""prepare_dataset on a 48 kHz stereo recording: clips, manifest, audiocraft index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import write_flac
from voice_train.audio import iter_mono_resampled
from voice_train.errors import VoiceTrainError
from voice_train.filters import SpeechFilter
from voice_train.fsutil import sha256_file
from voice_train.loudness import LoudnessMeter, gated_loudness
from voice_train.preflight import PreflightSettings, run_preflight
from voice_train.prepare import PrepareSettings, noisy_warning, prepare_dataset
from voice_train.segment import SegmentSettings

SETTINGS = PrepareSettings(segment=SegmentSettings(min_clip_s=2, max_clip_s=8), valid_fraction=0.2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, voice_48k_stereo):
    root = tmp_path_factory.mktemp("prepared")
    source = write_flac(root / "voice.flac", voice_48k_stereo, 48000)
    marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
    out = root / "dataset"
    manifest = prepare_dataset(source, marker, "tester", "a test voice", out, SETTINGS)
    return source, out, manifest


def test_manifest_keeps_the_runbook_fields(prepared):
    source, out, manifest = prepared
    on_disk = json.loads((out / "voice_dataset_manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["schema"] == "voice_dataset/1" and manifest["mode"] == "voice_dataset"
    assert manifest["count"] == len(manifest["entries"]) >= 3  # a train, a valid and a test clip
    for entry in manifest["entries"]:
        assert {"source", "target", "bytes", "sha256"} <= entry.keys()
        assert {"offset_s", "duration_s", "sample_rate", "split", "description"} <= entry.keys()
        target = Path(entry["target"])
        assert entry["source"] == str(source)
        assert target.stat().st_size == entry["bytes"]
        assert sha256_file(target) == entry["sha256"]


def test_clips_are_mono_at_the_model_rate_and_normalised(prepared):
    _, _, manifest = prepared
    for entry in manifest["entries"]:
        info = sf.info(entry["target"])
        assert (info.samplerate, info.channels, info.format) == (32000, 1, "FLAC")
        assert info.duration == pytest.approx(entry["duration_s"], abs=0.01)
        audio, _ = sf.read(entry["target"], dtype="float32")
        assert np.abs(audio).max() <= 10 ** (SETTINGS.peak_dbfs / 20) + 1e-3
        meter = LoudnessMeter(32000)
        meter.feed(audio)
        loudness = gated_loudness(meter.steps())
        # At the target, unless the peak ceiling held the gain back.
        assert loudness <= SETTINGS.loudness_lufs + 0.5
        assert loudness > SETTINGS.loudness_lufs - 6


def test_clips_are_the_source_at_their_offsets_high_passed(prepared):
    source, _, manifest = prepared
    mono = SpeechFilter(32000, SETTINGS.highpass_hz)(np.concatenate(list(iter_mono_resampled(source, 32000))))
    entry = manifest["entries"][1]
    start = round(entry["offset_s"] * 32000)
    clip, _ = sf.read(entry["target"], dtype="float32")
    original = mono[start : start + clip.size] * 10 ** (entry["gain_db"] / 20)
    assert np.corrcoef(clip, original)[0, 1] > 0.999


def test_the_manifest_has_train_valid_and_test_clips_apart_in_time(prepared):
    _, out, manifest = prepared
    entries = manifest["entries"]
    assert {e["split"] for e in entries} == {"train", "valid", "test"}
    ordered = sorted(entries, key=lambda e: e["offset_s"])
    for a, b in zip(ordered, ordered[1:]):  # the guard: no clip touches one of another split
        if a["split"] != b["split"]:
            assert b["offset_s"] - (a["offset_s"] + a["duration_s"]) >= SETTINGS.split_guard_s - 0.011
    for split in ("train", "valid", "test"):
        count = sum(e["split"] == split for e in entries)
        assert manifest["summary"][split]["count"] == count
        assert len((out / split / "data.jsonl").read_text().splitlines()) == count


def test_audiocraft_index_and_clip_info(prepared):
    _, out, manifest = prepared
    lines = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert [x["path"] for x in lines] == [e["target"] for e in manifest["entries"]]
    assert set(lines[0]) == {"path", "duration", "sample_rate", "amplitude", "weight", "info_path"}
    for split in ("train", "valid"):
        subset = (out / split / "data.jsonl").read_text().splitlines()
        assert len(subset) == manifest["summary"][split]["count"]
    info = json.loads(Path(manifest["entries"][0]["target"]).with_suffix(".json").read_text())
    assert info["description"] == "a test voice"


def test_summary_accounts_for_the_recording(prepared):
    _, _, manifest = prepared
    summary = manifest["summary"]
    assert summary["source_duration_s"] == pytest.approx(40, abs=0.01)
    assert summary["kept_duration_s"] == pytest.approx(sum(e["duration_s"] for e in manifest["entries"]))
    kept_or_guarded = summary["kept_duration_s"] + summary["dropped_guard"]["duration_s"]
    assert summary["speech_duration_s"] <= kept_or_guarded <= summary["source_duration_s"]
    assert sum(summary[s]["count"] for s in ("train", "valid", "test")) == manifest["count"]


def test_no_temporary_files_left(prepared):
    _, out, _ = prepared
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_changed_source_is_refused(tmp_path, voice_48k_stereo):
    source = write_flac(tmp_path / "voice.flac", voice_48k_stereo, 48000)
    marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
    write_flac(source, voice_48k_stereo[::-1].copy(), 48000)
    with pytest.raises(VoiceTrainError, match="changed since its preflight"):
        prepare_dataset(source, marker, "v", "d", tmp_path / "out", SETTINGS)
    assert not (tmp_path / "out" / "voice_dataset_manifest.json").exists()


def test_resampler_keeps_pitch(tmp_path):
    t = np.arange(48000 * 3) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t))[:, None].astype(np.float32)
    path = write_flac(tmp_path / "tone.flac", tone, 48000)
    out = np.concatenate(list(iter_mono_resampled(path, 32000, block_frames=4097)))
    assert out.size == 32000 * 3
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    peak_hz = np.argmax(spectrum) * 32000 / (out.size - 2000)
    assert peak_hz == pytest.approx(1000, abs=2)
    # Block-wise streaming gives the same samples as one-shot resampling.
    whole = soxr.resample(tone[:, 0], 48000, 32000, quality="HQ")
    assert np.max(np.abs(whole - out)) < 1e-4


def test_threads_give_the_same_bytes(tmp_path, prepared):
    source, out, manifest = prepared
    marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
    threaded = prepare_dataset(source, marker, "tester", "a test voice", tmp_path, SETTINGS, threads=3)

    def without_paths(m: dict) -> dict:
        return {**m, "entries": [{k: v for k, v in e.items() if k != "target"} for e in m["entries"]]}

    assert without_paths(threaded) == without_paths(manifest)
    for name in sorted(p.name for p in (out / "clips").iterdir()):
        assert (tmp_path / "clips" / name).read_bytes() == (out / "clips" / name).read_bytes()


def test_the_spool_goes_to_local_scratch_never_beside_the_dataset(tmp_path, prepared, monkeypatch):
    """The float32 copy of the recording (~460 MB an hour) lives in paths.scratch_dir while prepare
    works, never under the dataset (Google Drive on Colab), and is gone afterwards; a spool that a
    killed run of this voice left there is removed, a running job's of another voice is not."""
    from voice_train import prepare as prepare_module

    source, _, manifest = prepared
    scratch, dataset = tmp_path / "scratch", tmp_path / "dataset"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = scratch / f"voice-train-spool-tester-{dead.pid}"
    other = scratch / f"voice-train-spool-other-{os.getpid()}"
    for folder in (stale, other):
        folder.mkdir(parents=True)
        (folder / "resampled.f32").write_bytes(b"\0" * 1000)
    spools = []
    original = prepare_module.analyse_to_spool

    def spying(source_, spool, *args, **kwargs):
        spools.append(Path(spool))
        return original(source_, spool, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "analyse_to_spool", spying)
    marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
    again = prepare_dataset(source, marker, "tester", "a test voice", dataset, SETTINGS, scratch_dir=scratch)
    assert again["count"] == manifest["count"]
    assert spools and spools[0].parent.parent == scratch and dataset not in spools[0].parents
    assert sorted(p.name for p in scratch.iterdir()) == [other.name], "the stale spool went, the other stays"
    assert not [p for p in dataset.rglob("*.f32")]


def test_dropping_most_of_the_speech_for_noise_is_said_in_one_line():
    """Frame counts only (10 ms frames): 30 s kept against 70 s dropped is said; 60 against 40 is not."""
    settings = PrepareSettings()
    said = noisy_warning([1000, 2000], [3000, 4000], settings)
    assert said is not None and "\n" not in said
    assert said.startswith("70% of the clips' speech (70.0 of 100.0 s, 2 clips)")
    assert "prepare.min_snr_db = 3 dB" in said and "keeps 30.0 s" in said
    assert noisy_warning([6000], [4000], settings) is None
    assert noisy_warning([6000], [], settings) is None
