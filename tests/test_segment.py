"""Segmentation properties, on frame levels of synthetic speech with known word positions."""

from __future__ import annotations

import numpy as np
import pytest

from voice_train.audio import frame_power, to_db
from voice_train.demo import synthesize_voice
from voice_train.segment import SegmentSettings, segment_at_pauses, speech_runs

FRAME_S = 0.01
SETTINGS = SegmentSettings(min_clip_s=2, max_clip_s=8)


@pytest.fixture(scope="module")
def voice():
    return synthesize_voice(duration_s=90, sample_rate=16000, channels=1, seed=7)


@pytest.fixture(scope="module")
def levels(voice):
    return np.asarray(to_db(frame_power(voice.audio[:, 0], int(16000 * FRAME_S))))


@pytest.fixture(scope="module")
def seg(levels):
    return segment_at_pauses(levels, FRAME_S, SETTINGS)


def test_clip_lengths_within_limits(seg):
    assert seg.clips
    for clip in seg.clips:
        assert SETTINGS.min_clip_s <= clip.frames * FRAME_S <= SETTINGS.max_clip_s + 1e-9


def test_clips_are_ordered_and_disjoint(seg):
    for a, b in zip(seg.clips, seg.clips[1:]):
        assert a.end <= b.start


def test_cuts_never_fall_inside_a_word(seg, voice):
    # Every clip boundary lies outside every word (with 20 ms of tolerance for the edges).
    for clip in seg.clips:
        for edge in (clip.start * FRAME_S, clip.end * FRAME_S):
            for start, end in voice.speech_intervals:
                assert not (start + 0.02 < edge < end - 0.02), (
                    f"cut at {edge:.2f}s inside word {start:.2f}-{end:.2f}"
                )


def test_cuts_fall_in_low_energy_regions(seg, levels):
    speech_level = np.percentile(levels, 95)
    for clip in seg.clips:
        for edge in (clip.start, clip.end - 1):
            assert levels[edge] < speech_level - 25


def test_kept_clips_account_for_the_speech(seg, voice):
    words = sum(end - start for start, end in voice.speech_intervals)
    kept = np.zeros(int(90 / FRAME_S) + 1, bool)
    for clip in seg.clips:
        kept[clip.start : clip.end] = True
    covered = sum(
        kept[int(s / FRAME_S) : int(e / FRAME_S)].mean() * (e - s) for s, e in voice.speech_intervals
    )
    assert covered / words > 0.95
    assert seg.speech_frames * FRAME_S == pytest.approx(words, rel=0.25)


def test_long_pauses_are_never_inside_a_clip(seg, voice):
    long_pauses = [(s, e) for s, e in voice.pause_intervals if e - s > SETTINGS.max_inner_pause_s + 0.1]
    assert long_pauses, "the synthetic voice has sentence pauses"
    for clip in seg.clips:
        for s, e in long_pauses:
            assert not (clip.start * FRAME_S < s and e < clip.end * FRAME_S)


def test_continuous_speech_is_cut_in_its_quietest_stretch_not_at_a_one_frame_dip():
    # 30 s of "speech" with no pause: every 2 s a 0.4 s stretch 7 dB down (a pause under
    # babble, above the pause threshold), and in between one frame 30 dB down (a stop
    # consonant inside a word: too short to be a pause).
    levels = np.full(3000, -20.0)
    for start in range(100, 2900, 200):
        levels[start : start + 40] = -27.0
        levels[start + 100] = -50.0
    levels = np.concatenate([np.full(50, -80.0), levels, np.full(50, -80.0)])
    seg = segment_at_pauses(levels, FRAME_S, SETTINGS)
    assert seg.clips and all(c.frames * FRAME_S <= SETTINGS.max_clip_s for c in seg.clips)
    assert any(c.forced_cut for c in seg.clips)
    inner_edges = [c.end for c in seg.clips[:-1]]
    assert all(levels[e] == -27.0 for e in inner_edges), "forced cuts land in the quiet stretches"


def test_a_forced_cut_goes_in_a_short_pause_the_detector_heard():
    # 14 s the detector hears as speech but for one breath of 0.1 s (too short to end a clip):
    # at 6.5 s, silent, between loud words. A soft word (0.6 s, 12 dB down) at 5 s is the
    # quietest half second, but a cut there would be inside it.
    levels = np.full(1400, -20.0)
    levels[470:530] = -32.0
    levels[650:660] = -70.0
    speech = levels > -60.0
    levels = np.concatenate([np.full(50, -80.0), levels, np.full(50, -80.0)])
    speech = np.concatenate([np.zeros(50, bool), speech, np.zeros(50, bool)])
    seg = segment_at_pauses(levels, FRAME_S, SETTINGS, speech)
    assert [(c.start, c.end, c.forced_cut) for c in seg.clips] == [(35, 705, True), (705, 1465, True)]


def test_isolated_short_speech_is_dropped_and_reported():
    levels = np.full(2000, -80.0)
    levels[500:550] = -20.0  # 0.5 s of speech, alone between long silences
    levels[1000:1600] = -20.0  # 6 s of speech
    seg = segment_at_pauses(levels, FRAME_S, SETTINGS)
    assert len(seg.clips) == 1 and len(seg.dropped_short) == 1


def test_short_gaps_do_not_split_speech():
    active = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0, 1], bool)
    assert speech_runs(active, min_gap=2) == [(0, 5), (9, 10)]


def test_deterministic(levels):
    a = segment_at_pauses(levels, FRAME_S, SETTINGS)
    b = segment_at_pauses(levels, FRAME_S, SETTINGS)
    assert a == b


def test_no_clip_includes_a_wall_and_speech_is_not_joined_across_one():
    # Speech 1-4 s and 4.6-7.5 s with another voice at 4.1-4.5 s: a 0.6 s gap that a clip would span.
    levels = np.full(1000, -60.0)
    speech = np.zeros(1000, dtype=bool)
    for start, end in ((100, 400), (460, 750)):
        levels[start:end], speech[start:end] = -20.0, True
    walls = np.zeros(1000, dtype=bool)
    walls[410:450] = True
    assert speech_runs(speech | walls, min_gap=100) == [(100, 750)]
    assert speech_runs(speech, min_gap=100, walls=walls) == [(100, 400), (460, 750)]
    seg = segment_at_pauses(levels, FRAME_S, SETTINGS, speech, walls)
    assert [(c.start, c.end) for c in seg.clips] == [(85, 405), (455, 765)]  # pads end halfway to the wall
    unwalled = segment_at_pauses(levels, FRAME_S, SETTINGS, speech)
    assert [(c.start, c.end) for c in unwalled.clips] == [(85, 765)]
