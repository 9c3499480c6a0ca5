"""Voice activity scoring in chunks (``voice_train.vad``) hears what scoring in one piece hears.

Material: the demo's synthetic voice (70 s) under brown noise at 10 dB SNR, made by
``tests/noisy_speech.py``; with 20 s chunks it has three chunk starts in the middle of speech.
"""

from __future__ import annotations

import numpy as np

import noisy_speech as ns
from voice_train import vad

RATE = 16000
BLOCK = 500  # frames: 5 s


def speech_heard(audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The share of each 5 s block's speech frames that the detector marks as speech."""
    windows = vad.window_probabilities(lambda a, b: audio[a:b], audio.size, RATE, threads=2)
    heard = vad.frame_probabilities(windows, mask.size, 0.01) >= 0.5
    blocks = [slice(k, k + BLOCK) for k in range(0, mask.size - BLOCK + 1, BLOCK)]
    return np.array([heard[b][mask[b]].mean() for b in blocks if mask[b].sum() > 100])


def test_a_chunk_started_in_the_middle_of_noisy_speech_still_hears_it(monkeypatch):
    """Each chunk starts from a fresh state. Started in the middle of speech in noise, the
    detector took it for background until the chunk ended (blocks of 5 s with none of their
    speech heard); started after a second of silence, as a recording starts, it hears what
    the whole recording scored in one piece hears."""
    speech = ns.demo_speech(70, RATE, seed=5)
    audio = ns.condition("brown_10db", speech, seed=5).audio
    mask = np.zeros(audio.size // 160, dtype=bool)
    for start, end in speech.spans:
        mask[int(start * 100) : int(end * 100)] = True
    monkeypatch.setattr(vad, "CHUNK_WINDOWS", 10**9)
    whole = speech_heard(audio, mask)
    monkeypatch.setattr(vad, "CHUNK_WINDOWS", 20 * RATE // vad.WINDOW)
    chunked = speech_heard(audio, mask)
    assert whole.min() > 0.7, "the detector hears this speech when it scores it in one piece"
    said = f"in chunks {np.round(chunked, 2)}, in one piece {np.round(whole, 2)}"
    assert np.all(chunked >= whole - 0.2), said  # the first seconds of a chunk may hear a little less
    assert chunked.mean() >= whole.mean() - 0.03, said
