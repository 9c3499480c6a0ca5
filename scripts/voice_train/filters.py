"""Take out what is not voice before anything is measured: DC offset, rumble and mains hum.

A recorder's DC offset, handling rumble and mains hum (50 or 60 Hz and their harmonics) add
level that is not speech: it fills the pauses, hides the speech's level changes and skews every
level check. ``SpeechFilter`` removes them, streamed block by block: a high-pass below the
voice (``VOICE_HIGHPASS_HZ``) and, when ``find_hum`` found mains hum in the recording, a narrow
notch on each of its harmonics. The user's file is never changed: the filter works on the
decoded samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import soxr
from scipy.signal import butter, iirnotch, sosfilt, sosfilt_zi, tf2sos, welch

# The high-pass every level check is made after: below the lowest adult voices' fundamental
# (~75-85 Hz), above rumble and the mains fundamental (a 4th-order Butterworth: -12 dB at 50 Hz).
VOICE_HIGHPASS_HZ = 70.0
MAINS_HZ = (50.0, 60.0)
# Hum is looked for up to here; higher harmonics are rarely above the noise.
HUM_MAX_HZ = 1000.0
# Mains hum is there when a line at one of its harmonics stands this far above the spectrum
# around it; once it is, each harmonic whose line stands out by HUM_HARMONIC_DB is notched.
HUM_PROMINENCE_DB = 10.0
HUM_HARMONIC_DB = 6.0
# Each notch is this wide (-3 dB), at any harmonic: mains drifts by ~0.05 Hz per harmonic.
NOTCH_WIDTH_HZ = 2.0
# Hum (and, in preflight, the SNR) is measured on this many excerpts of this length, spread
# over the recording (all of it when it is shorter): a minute says enough, at little cost.
EXCERPTS = 8
EXCERPT_S = 8.0
_ANALYSIS_RATE = 4000  # hum is looked for in a 4 kHz copy: 0.5 Hz resolution for little work


@dataclass(frozen=True)
class Hum:
    """Mains hum found in a recording: its fundamental and the harmonics that stand out."""

    mains_hz: float  # the measured fundamental (e.g. 49.98), not just the nominal 50 or 60
    harmonics: tuple[int, ...]  # which multiples of it are notched (1 = the fundamental)
    prominence_db: float  # how far the strongest line stands above its surroundings

    def frequencies(self) -> list[float]:
        return [k * self.mains_hz for k in self.harmonics]


def highpass_sos(sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """A 4th-order Butterworth high-pass at ``cutoff_hz``, as second-order sections."""
    return butter(4, cutoff_hz, btype="highpass", fs=sample_rate, output="sos")


def notch_sos(sample_rate: int, frequencies: Iterable[float]) -> np.ndarray:
    """One ``NOTCH_WIDTH_HZ``-wide notch per frequency below Nyquist, as second-order sections."""
    sections = [
        tf2sos(*iirnotch(f, f / NOTCH_WIDTH_HZ, fs=sample_rate))
        for f in frequencies
        if 0 < f < 0.45 * sample_rate
    ]
    return np.concatenate(sections) if sections else np.zeros((0, 6))


class SpeechFilter:
    """Streams mono blocks through the high-pass and the hum notches; keeps its state between blocks.

    ``highpass_hz`` 0 and ``hum`` None make it a pass-through (the blocks come back unchanged).
    """

    def __init__(self, sample_rate: int, highpass_hz: float = VOICE_HIGHPASS_HZ, hum: Hum | None = None):
        parts = []
        if highpass_hz > 0:
            parts.append(highpass_sos(sample_rate, highpass_hz))
        if hum is not None:
            parts.append(notch_sos(sample_rate, hum.frequencies()))
        self.sos = np.concatenate(parts) if parts else np.zeros((0, 6))
        self._zi: np.ndarray | None = None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """The next block, filtered, as float32 (the state carries over to the next call)."""
        if not len(self.sos) or block.size == 0:
            return block
        if self._zi is None:
            # Start as if the first sample had always been there: a DC offset then gives no
            # step (and no thump) at the start.
            self._zi = sosfilt_zi(self.sos) * float(block[0])
        out, self._zi = sosfilt(self.sos, block.astype(np.float64), zi=self._zi)
        return out.astype(np.float32)


def _prominence_db(
    freqs: np.ndarray, power: np.ndarray, target_hz: float, drift: float
) -> tuple[float, float]:
    """How far the strongest line within ``drift`` Hz of ``target_hz`` stands above the median
    around it (10 Hz further on each side), and where it is."""
    near = np.abs(freqs - target_hz) <= drift
    around = (np.abs(freqs - target_hz) <= drift + 10.0) & ~near
    if not near.any() or not around.any():
        return 0.0, target_hz
    peak = int(np.flatnonzero(near)[np.argmax(power[near])])
    floor = float(np.median(power[around]))
    if floor <= 0:
        return 0.0, target_hz
    return 10.0 * math.log10(max(float(power[peak]), 1e-30) / floor), _refine(freqs, power, peak)


def _refine(freqs: np.ndarray, power: np.ndarray, peak: int) -> float:
    """The frequency of a spectral peak, between bins (a parabola through the log powers)."""
    if peak == 0 or peak == power.size - 1:
        return float(freqs[peak])
    a, b, c = np.log(np.maximum(power[peak - 1 : peak + 2], 1e-30))
    denominator = a - 2 * b + c
    shift = 0.5 * (a - c) / denominator if denominator else 0.0
    return float(freqs[peak] + shift * (freqs[1] - freqs[0]))


def find_hum(excerpts: Iterable[np.ndarray], sample_rate: int) -> Hum | None:
    """Mains hum in these mono excerpts of a recording, or None.

    The excerpts' long-term spectrum (0.5 Hz resolution) is searched for narrow lines at the
    multiples of 50 and of 60 Hz up to ``HUM_MAX_HZ``. Speech has no such lines over minutes
    (its pitch moves), hum does. A family is hum when one of its three lowest harmonics stands
    out by ``HUM_PROMINENCE_DB`` and another harmonic does too (or that one by 5 dB more); then
    every harmonic that stands out by ``HUM_HARMONIC_DB`` at its exact multiple of the measured
    mains frequency is notched. Of two families, the stronger line wins.
    """
    spectra = []
    for excerpt in excerpts:
        low = soxr.resample(excerpt, sample_rate, _ANALYSIS_RATE, quality="HQ")
        if low.size >= 2 * _ANALYSIS_RATE:
            spectra.append(welch(low, _ANALYSIS_RATE, nperseg=2 * _ANALYSIS_RATE)[1])
    if not spectra:
        return None
    freqs = np.fft.rfftfreq(2 * _ANALYSIS_RATE, 1 / _ANALYSIS_RATE)
    power = np.mean(spectra, axis=0)
    best: Hum | None = None
    for nominal in MAINS_HZ:
        # Grids hold their frequency within ~1%: search that far for the lines of the three
        # lowest harmonics, where hum is strongest, and measure the mains frequency on the
        # most prominent of them.
        low = [_prominence_db(freqs, power, k * nominal, 0.01 * k * nominal) for k in (1, 2, 3)]
        k_top = int(np.argmax([prominence for prominence, _ in low])) + 1
        mains_hz = low[k_top - 1][1] / k_top
        # Then every harmonic must sit where mains puts it: room modes and voices do not.
        prominences = [
            _prominence_db(freqs, power, k * mains_hz, max(0.5, 0.002 * k * mains_hz))[0]
            for k in range(1, int(HUM_MAX_HZ // nominal) + 1)
        ]
        strong = [k for k, p in enumerate(prominences, 1) if p >= HUM_PROMINENCE_DB]
        strongest = max(prominences[:3])
        if strongest >= HUM_PROMINENCE_DB and (len(strong) >= 2 or strongest >= HUM_PROMINENCE_DB + 5):
            found = tuple(k for k, p in enumerate(prominences, 1) if p >= HUM_HARMONIC_DB)
            if best is None or strongest > best.prominence_db:
                best = Hum(round(mains_hz, 3), found, round(strongest, 1))
    return best
