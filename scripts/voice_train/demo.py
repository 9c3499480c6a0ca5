"""A deterministic, voice-like recording for the demo and the tests.

Source-filter synthesis: a glottal pulse train with a gliding, declining pitch, shaped by
vowel formants, with noise-burst consonants, grouped into syllables, words, phrases and
sentences separated by pauses, over a faint noise floor. No recorded audio is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, lfilter, sosfilt

from .fsutil import atomic_path

# Formant frequencies (Hz) of a few vowels, an adult voice.
VOWELS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (300, 2250, 2900),
    "o": (570, 840, 2410),
    "u": (320, 920, 2300),
}
FORMANT_BANDWIDTHS = (80, 110, 160)
NOISE_FLOOR_DBFS = -65.0
PEAK_DBFS = -3.0


@dataclass(frozen=True)
class SynthVoice:
    """Synthesised audio with the ground truth of where the words and the pauses are."""

    audio: np.ndarray  # float32, (frames, channels)
    sample_rate: int
    speech_intervals: list[tuple[float, float]]  # each word's (start_s, end_s)
    pause_intervals: list[tuple[float, float]]  # gaps between words of at least 0.25 s


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, x)


def _syllable(rng: np.random.Generator, sr: int, f0_start: float, f0_end: float) -> np.ndarray:
    """One syllable: an optional consonant burst, then a voiced vowel with a pitch glide."""
    dur = rng.uniform(0.12, 0.32)
    n = int(dur * sr)
    t = np.arange(n) / sr
    # Pitch glides between the targets, with a slow vibrato and a little jitter.
    f0 = np.linspace(f0_start, f0_end, n) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    f0 *= 1 + 0.004 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    harmonics = np.arange(1, int(0.45 * sr / f0.max()) + 1)
    # Glottal source: harmonics with a -12 dB/octave tilt, all below Nyquist.
    source = (np.sin(np.outer(phase, harmonics)) / harmonics**2).sum(axis=1)
    f1, f2, f3 = VOWELS[rng.choice(list(VOWELS))]
    voiced = sum(
        _resonator(source, f, b, sr) * g for f, b, g in zip((f1, f2, f3), FORMANT_BANDWIDTHS, (1.0, 0.6, 0.3))
    )
    attack, release = int(0.02 * sr), int(0.05 * sr)
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack)
    env[-release:] = np.linspace(1, 0, release)
    voiced *= env / (np.abs(voiced).max() + 1e-9)
    if rng.random() < 0.5:
        # A fricative or plosive onset: band-passed noise before the vowel.
        m = int(rng.uniform(0.03, 0.12) * sr)
        low = min(rng.uniform(2000, 4000), 0.2 * sr)  # stay below Nyquist at low rates
        sos = butter(2, [low, min(low * 2, 0.45 * sr)], btype="band", fs=sr, output="sos")
        burst = sosfilt(sos, rng.standard_normal(m))
        burst *= np.hanning(m) * 0.3 / (np.abs(burst).max() + 1e-9)
        voiced = np.concatenate([burst, voiced])
    return voiced * 10 ** (rng.uniform(-6, 0) / 20)


def synthesize_voice(
    duration_s: float = 120.0, sample_rate: int = 44100, channels: int = 1, seed: int = 0
) -> SynthVoice:
    """Synthesise ``duration_s`` of voice-like audio; the same arguments give identical audio.

    Words of 1-3 syllables, short gaps between words, phrase pauses (0.3-0.8 s), sentence
    pauses (0.8-1.6 s) and now and then a long pause (2-3 s); the peak is at -3 dBFS.
    """
    rng = np.random.default_rng(seed)
    sr = sample_rate
    total = int(duration_s * sr)
    mono = np.zeros(total)
    words: list[tuple[float, float]] = []
    pos = 0.5
    base = rng.uniform(110, 140)
    next_long_pause = rng.uniform(25, 35)
    while True:
        sentence_words = rng.integers(2, 4) * rng.integers(3, 6)
        phrase_left = rng.integers(3, 9)
        declination = np.linspace(1.15, 0.85, sentence_words + 1)
        for w in range(sentence_words):
            n_syll = rng.integers(1, 4)
            pitch = base * declination[w] * rng.uniform(0.85, 1.2, n_syll + 1)
            parts = []
            for s in range(n_syll):
                parts.append(_syllable(rng, sr, pitch[s], pitch[s + 1]))
                parts.append(np.zeros(int(rng.uniform(0.0, 0.05) * sr)))
            word = np.concatenate(parts[:-1])
            start = int(pos * sr)
            if start + word.size > total - int(0.5 * sr):
                return _finish(mono, words, channels, sr, rng)
            mono[start : start + word.size] += word
            words.append((pos, pos + word.size / sr))
            pos += word.size / sr
            phrase_left -= 1
            if phrase_left == 0:
                pos += rng.uniform(0.3, 0.8)
                phrase_left = rng.integers(3, 9)
            else:
                pos += rng.uniform(0.06, 0.2)
        pos += rng.uniform(0.8, 1.6)
        if pos > next_long_pause:
            pos += rng.uniform(2.0, 3.0)
            next_long_pause = pos + rng.uniform(25, 35)


def _finish(
    mono: np.ndarray, words: list[tuple[float, float]], channels: int, sr: int, rng: np.random.Generator
) -> SynthVoice:
    mono *= 10 ** (PEAK_DBFS / 20) / np.abs(mono).max()
    noise_rms = 10 ** (NOISE_FLOOR_DBFS / 20)
    gains = 10 ** (-rng.uniform(0, 1.5, channels) / 20)
    audio = np.stack([mono * g + noise_rms * rng.standard_normal(mono.size) for g in gains], axis=1)
    # Keep the peak at -3 dBFS after the noise is added.
    audio *= 10 ** (PEAK_DBFS / 20) / np.abs(audio).max()
    pauses = [(a[1], b[0]) for a, b in zip(words, words[1:]) if b[0] - a[1] >= 0.25]
    return SynthVoice(audio.astype(np.float32), sr, words, pauses)


def write_demo_flac(
    path: str | Path, duration_s: float = 120.0, sample_rate: int = 44100, channels: int = 2, seed: int = 0
) -> SynthVoice:
    """Synthesise and write a 16-bit FLAC atomically; return the synthesised voice."""
    voice = synthesize_voice(duration_s, sample_rate, channels, seed)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), voice.audio, sample_rate, format="FLAC", subtype="PCM_16")
    return voice
