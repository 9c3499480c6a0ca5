"""Loudness per ITU-R BS.1770: K-weighting and gated block loudness.

The recording is analysed once, streamed: each 100 ms step yields the K-weighted mean
square of that step; any span's gated loudness (400 ms blocks, 75 % overlap) is then
computed from those steps without touching the audio again.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import sosfilt, sosfilt_zi

from .audio import Series

STEP_S = 0.1  # BS.1770 blocks are 400 ms with a 100 ms hop: 4 steps per block.
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """Second-order sections of the BS.1770 K-weighting filter for ``sample_rate``.

    The two stages (a high shelf modelling the head, then a high-pass) are designed from
    their analogue prototypes with the bilinear transform, so any sample rate works.
    """
    # Stage 1: high shelf, +4 dB above ~1.68 kHz.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    # Stage 2: second-order high-pass at ~38 Hz.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


class LoudnessMeter:
    """Streams mono samples through K-weighting and keeps each 100 ms step's mean square."""

    def __init__(self, sample_rate: int, expected_samples: int = 0) -> None:
        self.sos = k_weighting_sos(sample_rate)
        self.zi = sosfilt_zi(self.sos) * 0.0
        self.step = int(round(sample_rate * STEP_S))
        self._carry = np.zeros(0, dtype=np.float64)
        self._steps = Series(expected_samples // self.step + 1)  # sized up front: see Series

    def feed(self, block: np.ndarray) -> None:
        """Add the next block of mono samples."""
        weighted, self.zi = sosfilt(self.sos, block.astype(np.float64), zi=self.zi)
        joined = np.concatenate([self._carry, weighted])
        n = joined.size // self.step
        if n:
            frames = joined[: n * self.step].reshape(n, self.step)
            self._steps.extend(np.einsum("ij,ij->i", frames, frames) / self.step)
        self._carry = joined[n * self.step :]

    def steps(self) -> np.ndarray:
        """K-weighted mean square of every complete 100 ms step so far."""
        return self._steps.values().copy()


def gated_loudness(step_power: np.ndarray) -> float:
    """Integrated loudness (LUFS) of consecutive 100 ms step powers, gated per BS.1770.

    Returns ``-inf`` when nothing passes the absolute gate (silence).
    """
    if step_power.size < 4:
        blocks = np.array([step_power.mean()]) if step_power.size else np.zeros(0)
    else:
        window = np.lib.stride_tricks.sliding_window_view(step_power, 4)
        blocks = window.mean(axis=1)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(blocks)
    loud = blocks[block_lufs > ABSOLUTE_GATE_LUFS]
    if loud.size == 0:
        return float("-inf")
    relative_gate = -0.691 + 10.0 * math.log10(loud.mean()) + RELATIVE_GATE_LU
    with np.errstate(divide="ignore"):
        gated = loud[-0.691 + 10.0 * np.log10(loud) > relative_gate]
    return -0.691 + 10.0 * math.log10(gated.mean())
