"""The synthetic demo voice: deterministic, voice-like, with real pauses."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from voice_train.demo import synthesize_voice, write_demo_flac

SR = 16000


@pytest.fixture(scope="module")
def voice():
    return synthesize_voice(duration_s=30, sample_rate=SR, channels=2, seed=5)


def rms_db(x):
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20)


def test_deterministic(voice):
    again = synthesize_voice(duration_s=30, sample_rate=SR, channels=2, seed=5)
    assert np.array_equal(voice.audio, again.audio)
    other = synthesize_voice(duration_s=30, sample_rate=SR, channels=2, seed=6)
    assert not np.array_equal(voice.audio[: other.audio.shape[0]], other.audio[: voice.audio.shape[0]])


def test_shape_level_and_channels(voice):
    assert voice.audio.shape == (30 * SR, 2) and voice.audio.dtype == np.float32
    assert -3.1 < 20 * np.log10(np.abs(voice.audio).max()) < -2.9
    left, right = voice.audio.T
    assert not np.array_equal(left, right)
    assert np.corrcoef(left, right)[0, 1] > 0.99


def test_pauses_are_quiet_and_words_are_loud(voice):
    mono = voice.audio[:, 0]
    speech = np.concatenate([mono[int(s * SR) : int(e * SR)] for s, e in voice.speech_intervals])
    pauses = np.concatenate([mono[int(s * SR) + 80 : int(e * SR) - 80] for s, e in voice.pause_intervals])
    assert rms_db(speech) - rms_db(pauses) > 30
    assert any(e - s >= 0.8 for s, e in voice.pause_intervals)
    speech_share = sum(e - s for s, e in voice.speech_intervals) / 30
    assert 0.4 < speech_share < 0.85


def test_pitch_is_voice_like_and_varies(voice):
    mono = voice.audio[:, 0].astype(np.float64)
    f0s = []
    for start, end in voice.speech_intervals[:20]:
        mid = int((start + end) / 2 * SR)
        frame = mono[mid - 400 : mid + 400] * np.hanning(800)
        ac = np.correlate(frame, frame, "full")[800:]
        lo, hi = SR // 300, SR // 70
        f0s.append(SR / (lo + np.argmax(ac[lo:hi])))
    assert all(70 < f < 300 for f in f0s)
    assert np.std(f0s) > 5


def test_write_demo_flac(tmp_path):
    path = tmp_path / "demo.flac"
    write_demo_flac(path, duration_s=8, sample_rate=SR, channels=2, seed=1)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels, info.frames) == ("FLAC", "PCM_16", 2, 8 * SR)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.flac"]
