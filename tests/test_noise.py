"""Real recordings (issue 12): noise, rooms, hum and cheap gear must not cut words or refuse
good speech. Short versions of ``bench/noise_bench.py``: 70 s of espeak-ng talkers per
condition, made once per test run (``tests/noisy_speech.py``), through ``run_preflight`` and
``prepare_dataset`` as the rules run them.

The speech comes from libespeak-ng in the ``espeakng-loader`` wheel (requirements-dev.txt), so
a fresh machine needs no system program; without the wheel the run stops at once naming the fix
(``conftest.pytest_sessionstart``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import noisy_speech as ns
from conftest import write_flac
from voice_train.errors import VoiceTrainError
from voice_train.preflight import PreflightSettings, run_preflight
from voice_train.prepare import PrepareSettings, prepare_dataset
from voice_train.segment import SegmentSettings

RATE = 16000
LENIENT = PreflightSettings(min_bytes=1000, min_duration_s=5)
# No guard between the splits here: these tests judge where clips are cut and what they keep, and
# the guard (voice_train.splits, tested on its own) leaves out whole clips at split boundaries.
SETTINGS = PrepareSettings(segment=SegmentSettings(min_clip_s=2, max_clip_s=8), split_guard_s=0.0)
# The goals: share of clip edges inside true pauses of the clean speech (an utterance
# runs from its first to its last 10 ms frame within 50 dB of its loudest). Under
# babble the detector hears speech everywhere, so every cut there is a forced cut in the
# quietest half second: 148 of 148 edges in pauses over seeds 5-10 (this is seed 5).
GOALS = {"clean": 0.99, "household_10db": 0.95, "babble_10db": 0.95, "room_0.7s_household_10db": 0.95}
FIVE_DB = "pink_5db"


@pytest.fixture(scope="module")
def speech() -> ns.Speech:
    """70 s of four espeak-ng talkers with known pauses (the clean truth)."""
    return ns.espeak_speech(70, RATE, seed=5)


def prepared(root: Path, name: str, audio: np.ndarray) -> tuple[dict | VoiceTrainError, dict | None]:
    """The manifest of ``audio`` run through preflight and prepare, or the refusal; the marker."""
    source = write_flac(root / f"{name}.flac", audio, RATE)
    marker = None
    try:
        marker = run_preflight(source, LENIENT)
        return prepare_dataset(source, marker, "v", "a test voice", root / name, SETTINGS, threads=2), marker
    except VoiceTrainError as exc:
        return exc, marker


@pytest.fixture(scope="module")
def results(tmp_path_factory, speech) -> dict:
    """Each condition's manifest (or refusal), its clips in seconds, and its preflight marker."""
    root = tmp_path_factory.mktemp("noisy")
    out = {}
    for name in [*GOALS, FIVE_DB]:
        result, marker = prepared(root, name, ns.condition(name, speech, seed=5).audio)
        clips = []
        if isinstance(result, dict):
            clips = [(e["offset_s"], e["offset_s"] + e["duration_s"]) for e in result["entries"]]
        out[name] = (result, clips, marker)
    return out


def share_in_pauses(clips, speech, at_least: int = 20) -> float:
    good, edges = ns.cuts_in_pauses(clips, speech.spans)
    assert edges >= at_least, "enough cuts to judge"
    return good / edges


@pytest.mark.parametrize("condition", list(GOALS))
def test_cuts_fall_in_true_pauses(results, speech, condition):
    result, clips, _ = results[condition]
    assert isinstance(result, dict), f"{condition} was refused: {result}"
    assert share_in_pauses(clips, speech) >= GOALS[condition]


@pytest.mark.parametrize("condition", [c for c in GOALS if c != "clean"])
def test_noisy_speech_keeps_what_the_clean_recording_keeps(results, speech, condition):
    clean = ns.speech_kept_s(results["clean"][1], speech.spans)
    kept = ns.speech_kept_s(results[condition][1], speech.spans)
    assert kept >= 0.9 * clean, f"{condition} kept {kept:.1f} s of speech, the clean recording {clean:.1f} s"


def test_five_db_is_prepared_and_cut_in_pauses(results, speech):
    """Pink noise at 5 dB passes preflight's 3 dB floor: it must be prepared, not refused, and cut
    in pauses (the refusal of a recording below the floor has a test of its own below)."""
    result, clips, marker = results[FIVE_DB]
    assert not isinstance(result, VoiceTrainError), result
    assert share_in_pauses(clips, speech, at_least=8) >= 0.90


def test_every_clip_has_an_snr_and_the_noisiest_are_dropped_and_counted(results):
    clean, _, _ = results["clean"]
    assert min(e["snr_db"] for e in clean["entries"]) > 40
    noisy, _, _ = results["household_10db"]
    snrs = [e["snr_db"] for e in noisy["entries"]]
    assert 5 < np.median(snrs) < 20, "a 10 dB mix measures near 10 dB"
    assert noisy["summary"]["snr_db"] == {"median": round(float(np.median(snrs)), 2), "min": min(snrs)}


def test_five_db_keeps_what_the_clean_recording_keeps(results, speech):
    """prepare.min_snr_db is preflight's floor (3 dB): a recording that passes preflight keeps its
    clips (with 5 dB it was 15-59% of the speech on the bench)."""
    result, clips, marker = results[FIVE_DB]
    assert not isinstance(result, VoiceTrainError), result
    assert any("preflight.warn_snr_db" in w for w in marker["warnings"]), "and preflight warns of the noise"
    clean = ns.speech_kept_s(results["clean"][1], speech.spans)
    assert ns.speech_kept_s(clips, speech.spans) >= 0.9 * clean


def test_a_burst_of_noise_drops_its_clips_and_counts_them(tmp_path, speech):
    """Clean speech but for 20 s of loud pink noise (-5 dB; a vacuum cleaner): the clips in it are
    dropped and counted as too noisy, the rest are kept, and preflight passes with a warning."""
    audio = ns.with_burst(speech, 25.0, 45.0, snr_db=-5.0, seed=5)
    source = write_flac(tmp_path / "burst.flac", audio, RATE)
    marker = run_preflight(source, LENIENT)
    manifest = prepare_dataset(source, marker, "v", "a test voice", tmp_path / "out", SETTINGS, threads=2)
    dropped = manifest["summary"]["dropped_noisy"]
    assert dropped["count"] > 0 and dropped["duration_s"] > 10
    for entry in manifest["entries"]:
        assert entry["snr_db"] >= SETTINGS.min_snr_db
        start, end = entry["offset_s"], entry["offset_s"] + entry["duration_s"]
        assert end <= 26.0 or start >= 44.0, f"a clip in the noise was kept: {entry}"
    outside = [span for span in speech.spans if span[1] < 25.0 or span[0] > 45.0]
    clips = [(e["offset_s"], e["offset_s"] + e["duration_s"]) for e in manifest["entries"]]
    assert ns.speech_kept_s(clips, outside) >= 0.9 * sum(b - a for a, b in outside)


def test_a_recording_too_noisy_to_train_on_is_refused_naming_its_snr(tmp_path, speech):
    source = write_flac(tmp_path / "loud_noise.flac", ns.condition("pink_-3db", speech, seed=5).audio, RATE)
    with pytest.raises(VoiceTrainError) as info:
        run_preflight(source, LENIENT)
    message = str(info.value)
    assert message.startswith(str(source)) and "\n" not in message
    assert "too noisy" in message and "SNR" in message and "preflight.min_snr_db" in message


def test_hum_rumble_and_dc_offset_do_not_hide_the_speech(tmp_path, speech):
    """A cheap recorder: mains hum louder than the voice, rumble and a DC offset over clean speech.
    Preflight judges the speech under them (the old checks refused it: no speech-like level
    changes), and the clips lose them."""
    t = np.arange(speech.audio.size) / RATE
    hum = sum(0.2 / k * np.sin(2 * np.pi * 60.0 * k * t + k) for k in (1, 2, 3, 4, 5))
    rumble = 0.1 * ns.coloured_noise(t.size, np.random.default_rng(0), 2.0)
    audio = 0.5 * speech.audio + hum + rumble + 0.05
    source = write_flac(tmp_path / "cheap.flac", audio / np.abs(audio).max() * 0.9, RATE)
    marker = run_preflight(source, LENIENT)
    assert marker["hum"]["mains_hz"] == pytest.approx(60.0, abs=0.1)
    assert {1, 2, 3} <= set(marker["hum"]["harmonics"])
    assert marker["dc_offset_dbfs"] > -40 and marker["snr_db"] > 20
    manifest = prepare_dataset(source, marker, "v", "d", tmp_path / "out", SETTINGS)
    entry = manifest["entries"][len(manifest["entries"]) // 2]
    clip, _ = sf.read(entry["target"], dtype="float64")
    start = round(entry["offset_s"] * RATE)
    before = sf.read(str(source), dtype="float64")[0][start : start + round(entry["duration_s"] * RATE)]

    def band_db(audio, rate, lo, hi):
        """Power in [lo, hi) Hz relative to the voice's 300-3000 Hz, in dB."""
        spectrum = np.abs(np.fft.rfft(audio - (0 if lo < 1 else np.mean(audio)))) ** 2
        freqs = np.fft.rfftfreq(audio.size, 1 / rate)
        band = spectrum[(freqs >= lo) & (freqs < hi)].mean()
        return 10 * np.log10(band / spectrum[(freqs >= 300) & (freqs < 3000)].mean())

    assert abs(np.mean(clip)) < 1e-3 < abs(np.mean(before)), "the DC offset is gone"
    assert band_db(clip, 32000, 5, 40) < band_db(before, RATE, 5, 40) - 30, "the rumble is gone"
    for line in (60.0, 120.0, 180.0):
        drop = band_db(before, RATE, line - 1, line + 1) - band_db(clip, 32000, line - 1, line + 1)
        assert drop > 20, f"the hum line at {line:g} Hz fell by {drop:.1f} dB only"


def test_the_truth_is_where_an_utterance_is_heard():
    """The ground truth itself (``noisy_speech``): a word's soft consonant 40 dB below its vowel
    is speech; a fade 60 dB below it, like the tail espeak-ng leaves on some utterances, is not.
    Made here: a 0.3 s tone as the vowel, quieter tones as the consonant and the fades."""
    t = np.arange(int(0.3 * RATE)) / RATE
    vowel = 0.5 * np.sin(2 * np.pi * 200 * t)
    consonant = 0.005 * np.sin(2 * np.pi * 3000 * t[: RATE // 20])
    fade = 0.0005 * np.sin(2 * np.pi * 500 * t[: RATE // 10])
    audio = np.concatenate([fade[: RATE // 20], vowel, consonant, fade])
    first, last = ns._audible_s(audio, RATE)
    assert first == pytest.approx(0.05) and last == pytest.approx(0.4)


def test_the_test_speech_is_the_same_whatever_was_spoken_before():
    """libespeak-ng keeps state between utterances in one process; each is spoken in its own."""
    jobs = [("The kettle was already singing", voice, 160, 50) for voice in ns.VOICES[:3]]
    first = ns._espeak_many(jobs)
    ns._espeak_many([("Something else entirely", "de+f4", 200, 80)])
    assert all(np.array_equal(a, b) for a, b in zip(first, ns._espeak_many(jobs)))
