"""Speaker screening (``voice_train.speakers``) on espeak-ng interviews with known turns.

The target is espeak-ng's ``en-us+m3``; the others ``de+f4`` and ``it+m7`` (a female voice and
a male one of other language bases), with turns of 2-4 s at 0.5-1 s gaps (``tests/noisy_speech.py``).
The speech frames come from the workflow's own voice activity detector.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import noisy_speech as ns
from conftest import write_flac
from voice_train.errors import VoiceTrainError
from voice_train.preflight import PreflightSettings, run_preflight
from voice_train.prepare import PrepareSettings, prepare_dataset
from voice_train.segment import SegmentSettings
from voice_train.speakers import FRAME_S, SpeakerSettings, embed_clip, screen_speakers, speech_windows
from voice_train.vad import frame_probabilities, window_probabilities

RATE = 16000
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def vad_speech(audio: np.ndarray) -> np.ndarray:
    """The voice activity detector's speech frames (10 ms) of ``audio`` at ``RATE``."""
    windows = window_probabilities(lambda a, b: audio[a:b], audio.size, RATE)
    return frame_probabilities(windows, int(audio.size / RATE / FRAME_S), FRAME_S) >= 0.5


def span_frames(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, end in spans:
        mask[int(start / FRAME_S) : int(end / FRAME_S)] = True
    return mask


def screen(audio: np.ndarray, speech: np.ndarray, **settings):
    read = lambda a, b: audio[a:b]  # noqa: E731
    return screen_speakers(read, RATE, speech, SpeakerSettings(**settings), "interview.flac")


@pytest.fixture(scope="module")
def interview():
    """An interview of ~80 s, its speech frames, the truth per frame and the screening's labels."""
    recording = ns.interview(90, RATE, seed=1)
    audio = recording.speech.audio
    speech = vad_speech(audio)
    target = span_frames(recording.target_spans, speech.size) & speech
    other = span_frames(recording.other_spans, speech.size) & speech
    return recording, speech, target, other, screen(audio, speech)


def test_the_others_have_at_least_five_percent_of_the_speech_in_turns_of_two_to_four_seconds(interview):
    recording, _, target, other, _ = interview
    assert 0.05 <= other.sum() / (target.sum() + other.sum()) <= 0.35
    turns = [end - start for start, end in recording.other_spans]
    assert len(turns) >= 3 and 1.8 <= min(turns) and max(turns) <= 4.5


def test_most_of_the_other_voices_are_removed_and_most_of_the_target_is_kept(interview):
    _, _, target, other, labels = interview
    removed = 1 - np.count_nonzero(labels.target & other) / np.count_nonzero(other)
    kept = np.count_nonzero(labels.target & target) / np.count_nonzero(target)
    assert removed >= 0.75, removed
    assert kept >= 0.85, kept
    assert labels.dominant_share >= 0.6


def test_the_same_voice_is_at_least_0_15_more_similar_than_the_others(interview):
    _, _, target, other, labels = interview
    truth = {}
    for name, mask in (("target", target), ("other", other)):
        # A window is the voice's whose stretch is mostly that voice's speech.
        share = [mask[a:b].mean() for a, b in zip(labels.windows.stretch_start, labels.windows.stretch_end)]
        truth[name] = labels.window_similarity[np.asarray(share) > 0.5]
    assert truth["target"].mean() - truth["other"].mean() >= 0.15, truth


def test_labels_cover_exactly_the_speech(interview):
    _, speech, _, _, labels = interview
    assert not np.any(labels.target & labels.other)
    assert np.array_equal(labels.target | labels.other, speech)
    assert np.all(np.isfinite(labels.frame_similarity[speech]))
    assert np.all(np.isnan(labels.frame_similarity[~speech]))


@pytest.fixture(scope="module")
def dialogue():
    """40 s of two voices taking turns, each with about half the speech, and its speech frames."""
    recording = ns.dialogue(40, RATE, seed=3)
    return recording, vad_speech(recording.speech.audio)


def test_two_equal_voices_are_refused_naming_the_file_and_the_fix(dialogue):
    recording, speech = dialogue
    audio = recording.speech.audio
    refusal = r"interview\.flac: no voice dominates: .* 5\d% of the speech.*; fix: .*speakers\.reference"
    with pytest.raises(VoiceTrainError, match=refusal):
        screen(audio, speech)


def test_a_reference_clip_names_a_voice_that_does_not_dominate(dialogue):
    recording, speech = dialogue
    audio = recording.speech.audio
    clip = ns.espeak_speech(8, RATE, seed=5, voices=("de+f4",)).audio
    settings = SpeakerSettings()  # the voice given overrides the dominance rule
    labels = screen_speakers(
        lambda a, b: audio[a:b], RATE, speech, settings, "x.flac", embed_clip(clip, RATE)
    )
    theirs = span_frames(recording.other_spans, speech.size) & speech
    host = span_frames(recording.target_spans, speech.size) & speech
    assert np.count_nonzero(labels.target & theirs) / np.count_nonzero(theirs) >= 0.85
    assert np.count_nonzero(labels.target & host) / np.count_nonzero(host) <= 0.25


def test_a_reference_voice_that_is_not_in_the_recording_is_refused(dialogue):
    recording, speech = dialogue
    audio = recording.speech.audio
    absent = embed_clip(ns.espeak_speech(6, RATE, seed=6, voices=("it+m7",)).audio, RATE)
    with pytest.raises(VoiceTrainError, match=r"x\.flac: none of its speech is the reference voice's"):
        screen_speakers(lambda a, b: audio[a:b], RATE, speech, SpeakerSettings(), "x.flac", absent)


def test_short_stretches_get_one_centred_window_and_long_ones_are_covered():
    speech = np.zeros(1000, dtype=bool)
    speech[100:150] = True  # 0.5 s
    speech[400:900] = True  # 5 s
    windows = speech_windows(speech)
    assert (windows.start[0], windows.end[0]) == (45, 205)
    long = windows.stretch_start == 400
    assert windows.start[long].min() == 400 and windows.end[long].max() == 900
    assert np.all(np.diff(windows.start[long]) <= 80)
    assert windows.weight_s.sum() == pytest.approx(5.5)


@pytest.fixture(scope="module")
def prepared_interview(interview, tmp_path_factory):
    """The interview through preflight and prepare with speaker screening on (clips of 2-10 s)."""
    recording = interview[0]
    root = tmp_path_factory.mktemp("interview")
    source = write_flac(root / "interview.flac", recording.speech.audio, RATE)
    marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
    settings = PrepareSettings(segment=SegmentSettings(min_clip_s=2, max_clip_s=10))
    return prepare_dataset(source, marker, "host", "a host", root / "out", settings, 1, SpeakerSettings())


def test_prepare_cuts_clips_of_the_target_only_and_counts_what_it_dropped(interview, prepared_interview):
    recording, _, target, other, labels = interview
    manifest = prepared_interview
    summary = manifest["summary"]
    assert summary["speakers"]["target"] == "dominant" and summary["speakers"]["target_share"] >= 0.6
    dropped = summary["dropped_other_speakers"]
    theirs_s = np.count_nonzero(other) * FRAME_S
    assert dropped["count"] >= len(recording.other_spans) - 1
    assert dropped["duration_s"] >= 0.75 * theirs_s
    clips = [(e["offset_s"], e["offset_s"] + e["duration_s"]) for e in manifest["entries"]]
    theirs_in_clips = ns.speech_kept_s(clips, recording.other_spans)
    assert theirs_in_clips <= 0.25 * sum(end - start for start, end in recording.other_spans)
    for entry in manifest["entries"]:
        assert entry["speaker_similarity"] >= SpeakerSettings().threshold


def test_prepare_keeps_most_of_what_it_keeps_of_the_recording_without_the_others(
    interview, prepared_interview, tmp_path
):
    recording = interview[0]
    alone = recording.speech.audio.copy()
    for start, end in recording.other_spans:
        alone[int(start * RATE) : int(end * RATE)] = 0.0
    source = write_flac(tmp_path / "alone.flac", alone, RATE)
    marker = run_preflight(source, PreflightSettings(min_bytes=1000, min_duration_s=5))
    settings = PrepareSettings(segment=SegmentSettings(min_clip_s=2, max_clip_s=10))
    manifest = prepare_dataset(source, marker, "host", "a host", tmp_path / "out", settings)

    def kept_s(entries: list[dict]) -> float:
        clips = [(e["offset_s"], e["offset_s"] + e["duration_s"]) for e in entries]
        return ns.speech_kept_s(clips, recording.target_spans)

    assert kept_s(prepared_interview["entries"]) >= 0.85 * kept_s(manifest["entries"])


def test_a_missing_encoder_is_one_line_naming_the_install(monkeypatch):
    from voice_train import speakers

    speakers.load_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    try:
        with pytest.raises(
            VoiceTrainError, match=r"^resemblyzer: the speaker encoder is not installed.*fix: install"
        ):
            speakers.load_encoder()
    finally:
        speakers.load_encoder.cache_clear()


def test_an_unreadable_reference_is_refused_naming_the_key(tmp_path):
    from voice_train.prepare import reference_voice

    with pytest.raises(
        VoiceTrainError, match=r"her\.flac: the speakers\.reference clip cannot be read.*fix: set"
    ):
        reference_voice(tmp_path / "her.flac")
