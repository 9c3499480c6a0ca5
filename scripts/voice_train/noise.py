"""How far the speech stands above the noise: SNR from frame powers and voice activity.

The noise is measured where the voice activity detector hears no speech, away from speech
edges (reverberation and breaths), leaving out its loudest frames (words the detector
missed); the speech is the power of the speech frames less that noise. Under babble, where
the detector hears speech everywhere, the quietest frames (the pauses of the near talker)
stand in for the noise. So intermittent noise (clatter) counts by its background, babble by
its quietest moments: both read a few dB better than their mean power would say.
"""

from __future__ import annotations

import math

import numpy as np

# Frames this close to speech are neither speech nor noise: reverberation tails, breaths.
EDGE_FRAMES = 10
# Fewer noise frames than this (in a span) and the quietest frames are the noise instead.
MIN_NOISE_FRAMES = 50
QUIET_SHARE = 0.1
# The loudest tenth of the noise frames is left out: a word the detector missed, 1% of the
# frames 50 dB up, would otherwise pass for the noise (measured on the demo voice: 15 dB, not 52).
TRIM_SHARE = 0.1
# What an SNR is reported as when no noise is measurable (digital silence between words).
MAX_SNR_DB = 80.0
# A clip's own quiet moments bound the noise under it: in every second of it (BLOCK_FRAMES) the
# quietest tenth of the frames (the gaps between words) is no quieter than what was heard then.
# When that bound is CONTAMINATED_DB below the noise of the pauses around the clip, those pauses
# heard something else (a burst that ended before the clip began) and the bound is the noise.
BLOCK_FRAMES = 100
BLOCK_QUIET = 0.1
CONTAMINATED_DB = 6.0


def noise_frames(speech: np.ndarray) -> np.ndarray:
    """Frames at least ``EDGE_FRAMES`` away from any speech frame."""
    speech = np.asarray(speech, dtype=bool)
    near = speech.copy()
    for shift in range(1, EDGE_FRAMES + 1):
        near[shift:] |= speech[:-shift]
        near[:-shift] |= speech[shift:]
    return ~near


def noise_power(power: np.ndarray, speech: np.ndarray) -> float:
    """Mean power of the noise frames less their loudest ``TRIM_SHARE``, or of the quietest
    ``QUIET_SHARE`` of all frames when there are fewer than ``MIN_NOISE_FRAMES`` noise frames
    (0.0 for no frames at all)."""
    if power.size == 0:
        return 0.0
    quiet = power[noise_frames(speech)]
    if quiet.size < MIN_NOISE_FRAMES:
        quiet = power
        keep = max(1, int(power.size * QUIET_SHARE))
    else:
        keep = max(1, int(quiet.size * (1.0 - TRIM_SHARE)))
    return float(np.partition(quiet, keep - 1)[:keep].mean())


def snr_db(speech_power: float, noise: float) -> float:
    """10·log10 of (speech power less the noise) over the noise, capped at ``MAX_SNR_DB``."""
    if noise <= 0:
        return MAX_SNR_DB if speech_power > 0 else 0.0
    clean = max(speech_power - noise, noise * 10 ** (-MAX_SNR_DB / 10))
    return min(MAX_SNR_DB, 10.0 * math.log10(clean / noise))


def recording_snr_db(power: np.ndarray, speech: np.ndarray) -> float:
    """SNR of a whole stretch of frames (their power and voice activity): speech over noise."""
    speech = np.asarray(speech, dtype=bool)
    if not speech.any():
        return 0.0
    return snr_db(float(power[speech].mean()), noise_power(power, speech))


def span_snr_db(
    power: np.ndarray, speech: np.ndarray, start: int, end: int, contexts: tuple[int, ...]
) -> float:
    """SNR of frames ``[start, end)``: their speech against the noise around them, within the
    first of ``contexts`` (frames on each side, smallest first) that holds ``MIN_NOISE_FRAMES``
    noise frames (the last one in any case). A clip holds too few pauses to measure the noise on
    its own; the nearest ones say what was heard while it was spoken, so a burst of noise next
    to a clip does not count against it, and one inside it does. Where the nearest pauses with
    enough noise frames are seconds away and heard a burst the clip was not spoken through (its
    every second has quiet moments well below that noise: :func:`quiet_bound`), the clip's own
    quiet moments are the noise."""
    speech = np.asarray(speech, dtype=bool)
    inside = speech[start:end]
    if not inside.any():
        return 0.0
    speech_power = float(power[start:end][inside].mean())
    # Noise frames of the widest context only (with room for their distance to speech).
    base = max(0, start - contexts[-1] - EDGE_FRAMES)
    far = noise_frames(speech[base : end + contexts[-1] + EDGE_FRAMES])
    for context in contexts:
        lo, hi = max(0, start - context), min(power.size, end + context)
        if np.count_nonzero(far[lo - base : hi - base]) >= MIN_NOISE_FRAMES or context == contexts[-1]:
            break
    noise = noise_power(power[lo:hi], speech[lo:hi])
    bound = quiet_bound(power[start:end])
    if bound * 10 ** (CONTAMINATED_DB / 10) < noise:
        noise = bound
    return snr_db(speech_power, noise)


def quiet_bound(power: np.ndarray) -> float:
    """An upper bound of the noise under frames ``power``: the loudest, over its seconds, of each
    second's quietest tenth (a last part shorter than half a second joins the one before)."""
    edges = list(range(0, power.size, BLOCK_FRAMES))
    if len(edges) > 1 and power.size - edges[-1] < BLOCK_FRAMES // 2:
        edges.pop()
    bounds = [np.quantile(power[a:b], BLOCK_QUIET) for a, b in zip(edges, [*edges[1:], power.size])]
    return float(max(bounds)) if bounds else float("inf")
