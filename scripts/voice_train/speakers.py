"""Whose voice is it: keep the speech of one voice and tell it from the others.

The speaker model is Resemblyzer's GE2E encoder (Apache-2.0): a 3-layer LSTM over 40-band mel
spectra of 1.6 s of 16 kHz audio, giving a 256-dimensional unit vector per window; windows of
one voice point the same way. Its weights ship inside the ``resemblyzer`` wheel, so nothing is
downloaded. It runs on the CPU: a batch of windows is one small LSTM pass.

Only speech is embedded: the voice activity detector's speech frames (10 ms) are grouped into
stretches (speech with no pause of ``STRETCH_GAP_S`` inside; people take turns at pauses), and
each stretch gets 1.6 s windows every ``HOP_S`` (a stretch shorter than a window gets one,
centred on it). The target voice is the one that speaks most: the window with the most
speech time within ``threshold`` of it seeds it, and the mean of the windows close to the voice
refines it a few times. A reference clip names it instead. Each speech frame then takes the mean
similarity of the windows over it, and frames at or above ``threshold`` are the target's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from .errors import VoiceTrainError
from .vad import frame_probabilities, window_probabilities

SPEAKER_RATE = 16000  # the encoder's rate
FRAME_S = 0.01  # speech frames and the encoder's mel frames are both 10 ms
WINDOW_FRAMES = 160  # 1.6 s: the encoder's partial utterance
HOP_S = 0.8
# A pause this long ends a stretch: turns are taken at pauses (0.5-1 s in conversation), while a
# speaker's own pauses between words are mostly shorter.
STRETCH_GAP_S = 0.3
# Each window is brought to this level before its mel spectrum (the encoder reads power, not
# log power, and was trained on speech at -30 dBFS): a voice is the same voice loud or soft.
LEVEL_DBFS = -30.0
BATCH = 64
# The voice is found on at most this many windows (evenly spaced): the search compares every
# pair, and an hour has ~4000 windows.
SEARCH_WINDOWS = 1500
REFINE_ROUNDS = 5
INSTALL_FIX = (
    "install the workflow's packages: python scripts/install.py "
    "(or pip install webrtcvad-wheels and pip install --no-deps resemblyzer==0.1.4)"
)


@dataclass(frozen=True)
class SpeakerSettings:
    """Parameters of speaker screening (config section ``speakers``)."""

    enabled: bool = True
    threshold: float = 0.75  # similarity to the voice at or above which speech is the target's
    min_dominant_share: float = 0.6  # the least share of the speech the dominant voice must have
    reference: str | None = None  # a clip of the target voice, when it is not the dominant one


@dataclass(frozen=True)
class Windows:
    """Windows of speech, in 10 ms frames: ``[start, end)`` each, the stretch it belongs to,
    and how many seconds of speech it stands for (a stretch's speech shared among its windows)."""

    start: np.ndarray  # int64 (n,)
    end: np.ndarray
    stretch_start: np.ndarray
    stretch_end: np.ndarray
    weight_s: np.ndarray  # float64 (n,)

    def __len__(self) -> int:
        return int(self.start.size)


@dataclass(frozen=True)
class SpeakerLabels:
    """Who speaks in each 10 ms frame, and how sure: the result of ``screen_speakers``."""

    target: np.ndarray  # bool per frame: speech of the target voice
    other: np.ndarray  # bool per frame: speech of another voice
    frame_similarity: np.ndarray  # float32 per frame: similarity to the voice (NaN outside speech)
    window_similarity: np.ndarray  # float32 per window
    windows: Windows
    voice: np.ndarray  # the target voice's embedding (unit vector)
    dominant_share: float  # share of the speech time within ``threshold`` of the voice

    @property
    def target_s(self) -> float:
        return float(np.count_nonzero(self.target) * FRAME_S)

    @property
    def other_s(self) -> float:
        return float(np.count_nonzero(self.other) * FRAME_S)


@functools.lru_cache(maxsize=1)
def load_encoder():
    """Resemblyzer's voice encoder on the CPU (loaded once per process); a one-line error naming
    the fix when the package is missing."""
    try:
        import torch
        from resemblyzer import VoiceEncoder
    except ImportError as exc:
        raise VoiceTrainError(
            Path("resemblyzer"), f"the speaker encoder is not installed ({exc})", INSTALL_FIX
        ) from exc
    encoder = VoiceEncoder(device=torch.device("cpu"), verbose=False)
    return encoder.eval()


def _stretches(speech: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs ``[start, end)`` of speech frames, joined across pauses shorter than ``gap`` frames."""
    padded = np.concatenate([[False], np.asarray(speech, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    runs: list[tuple[int, int]] = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if runs and start - runs[-1][1] < gap:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def speech_windows(speech: np.ndarray, hop_s: float = HOP_S, gap_s: float = STRETCH_GAP_S) -> Windows:
    """Where to embed: windows of ``WINDOW_FRAMES`` over each stretch of speech.

    A stretch longer than a window gets windows from its start to its end, evenly spaced at most
    ``hop_s`` apart; a shorter one gets one window centred on it (a little of the pause on either
    side). Windows stay inside the recording when it is longer than a window.
    """
    speech = np.asarray(speech, dtype=bool)
    n_frames, hop = speech.size, max(1, int(round(hop_s / FRAME_S)))
    rows: list[tuple[int, int, int, int, float]] = []
    for a, b in _stretches(speech, max(1, int(round(gap_s / FRAME_S)))):
        seconds = np.count_nonzero(speech[a:b]) * FRAME_S
        if b - a <= WINDOW_FRAMES:
            starts = [(a + b - WINDOW_FRAMES) // 2]
        else:
            count = int(np.ceil((b - a - WINDOW_FRAMES) / hop)) + 1
            starts = np.linspace(a, b - WINDOW_FRAMES, count).round().astype(int).tolist()
        for s in starts:
            s = min(max(s, 0), max(0, n_frames - WINDOW_FRAMES))
            rows.append((s, s + WINDOW_FRAMES, a, b, seconds / len(starts)))
    columns = list(zip(*rows)) if rows else [()] * 5
    return Windows(
        *(np.asarray(c, dtype=np.int64) for c in columns[:4]), np.asarray(columns[4], dtype=np.float64)
    )


def _window_mels(audio: np.ndarray, offset: int, windows: Windows, picks: range) -> np.ndarray:
    """Mel spectra ``(len(picks), WINDOW_FRAMES, 40)`` of the picked windows, cut from ``audio``
    (16 kHz, starting at frame ``offset``), each brought to ``LEVEL_DBFS`` first."""
    from resemblyzer.audio import wav_to_mel_spectrogram

    hop = int(SPEAKER_RATE * FRAME_S)
    mels = []
    for i in picks:
        lo = (int(windows.start[i]) - offset) * hop
        wav = audio[max(0, lo) : lo + WINDOW_FRAMES * hop]
        wav = np.pad(wav, (max(0, -lo), WINDOW_FRAMES * hop - wav.size - max(0, -lo)))
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
        if rms > 0:
            wav = wav * np.float32(10 ** (LEVEL_DBFS / 20) / rms)
        mels.append(wav_to_mel_spectrogram(wav.astype(np.float32))[:WINDOW_FRAMES])
    return np.stack(mels)


def embed_windows(
    read: Callable[[int, int], np.ndarray], sample_rate: int, windows: Windows, batch: int = BATCH
) -> np.ndarray:
    """The voice embedding (unit vector, 256) of each window, ``(len(windows), 256)`` float32.

    ``read(start, stop)`` returns mono float32 samples ``[start, stop)`` at ``sample_rate``
    (fewer at the end). Audio is read and resampled to 16 kHz a batch of windows at a time.
    """
    import torch

    encoder = load_encoder()
    out = np.zeros((len(windows), 256), dtype=np.float32)
    scale = sample_rate / SPEAKER_RATE
    hop = int(SPEAKER_RATE * FRAME_S)
    for first in range(0, len(windows), batch):
        picks = range(first, min(first + batch, len(windows)))
        lo, hi = int(windows.start[picks[0]]), int(windows.end[picks].max())
        audio = read(int(lo * hop * scale), int(np.ceil(hi * hop * scale)))
        if sample_rate != SPEAKER_RATE:
            audio = soxr.resample(audio, sample_rate, SPEAKER_RATE, quality="HQ")
        mels = _window_mels(np.asarray(audio, dtype=np.float32), lo, windows, picks)
        with torch.inference_mode():
            out[picks.start : picks.stop] = encoder(torch.from_numpy(mels)).numpy()
    return out


def embed_clip(audio: np.ndarray, sample_rate: int, speech: np.ndarray | None = None) -> np.ndarray:
    """One voice embedding (unit vector) for a clip: the mean of its speech windows' embeddings
    (all of it when ``speech``, one bool per 10 ms frame, is not given)."""
    n_frames = int(audio.size / sample_rate / FRAME_S)
    speech = np.ones(n_frames, dtype=bool) if speech is None else speech
    windows = speech_windows(speech)
    if len(windows) == 0:
        raise ValueError("the clip holds no speech to embed")
    embeddings = embed_windows(lambda a, b: audio[a:b], sample_rate, windows)
    return _unit(embeddings.T @ windows.weight_s)


def clip_speech(audio: np.ndarray, sample_rate: int, threshold: float = 0.5) -> np.ndarray:
    """The voice activity detector's verdict on a short clip (mono float32): one bool per 10 ms
    frame, speech where its probability is at least ``threshold``."""
    probabilities = window_probabilities(lambda a, b: audio[a:b], audio.size, sample_rate)
    return frame_probabilities(probabilities, int(audio.size / sample_rate / FRAME_S), FRAME_S) >= threshold


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def find_voice(embeddings: np.ndarray, weight_s: np.ndarray, threshold: float) -> np.ndarray:
    """The embedding of the voice that speaks most.

    Seed: the window with the most speech time among the windows within ``threshold`` of it
    (the densest neighbourhood; searched on at most ``SEARCH_WINDOWS`` evenly spaced windows).
    Then, ``REFINE_ROUNDS`` times, the voice becomes the weighted mean of all windows within
    ``threshold`` of it, so it settles on the centre of its voice's windows.
    """
    picks = np.linspace(0, len(embeddings) - 1, min(len(embeddings), SEARCH_WINDOWS)).round().astype(int)
    sample, weights = embeddings[picks], weight_s[picks]
    density = (sample @ sample.T >= threshold).astype(np.float64) @ weights
    voice = embeddings[picks[int(np.argmax(density))]]
    for _ in range(REFINE_ROUNDS):
        close = embeddings @ voice >= threshold
        if not close.any():  # a threshold above what the windows reach: keep the seed
            break
        voice = _unit(embeddings[close].T @ weight_s[close])
    return voice


def frame_similarity(windows: Windows, similarity: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Each speech frame's similarity: the mean of the windows over it (only their part within
    the frame's stretch counts); NaN outside speech."""
    n = speech.size
    total, count = np.zeros(n + 1), np.zeros(n + 1)
    lo = np.maximum(windows.start, windows.stretch_start)
    hi = np.minimum(windows.end, windows.stretch_end)
    np.add.at(total, lo, similarity)
    np.add.at(total, hi, -similarity)
    np.add.at(count, lo, 1)
    np.add.at(count, hi, -1)
    total, count = np.cumsum(total)[:n], np.cumsum(count)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = (total / count).astype(np.float32)
    result[~np.asarray(speech, dtype=bool) | (count < 0.5)] = np.nan
    return result


def screen_speakers(
    read: Callable[[int, int], np.ndarray],
    sample_rate: int,
    speech: np.ndarray,
    settings: SpeakerSettings,
    source: str | Path,
    voice: np.ndarray | None = None,
) -> SpeakerLabels:
    """Label each 10 ms speech frame of a recording as the target voice's or another's.

    ``read(start, stop)`` gives the recording's mono float32 samples at ``sample_rate``;
    ``speech`` is the voice activity detector's verdict per 10 ms frame. The target is ``voice``
    (an embedding, e.g. ``embed_clip`` of a reference clip) or else the dominant voice. Refused
    (``VoiceTrainError`` naming ``source``): without a reference, a recording whose dominant
    voice has less than ``settings.min_dominant_share`` of the speech; with one, a recording
    where none of the speech is that voice's.
    """
    speech = np.asarray(speech, dtype=bool)
    windows = speech_windows(speech)
    if len(windows) == 0:
        raise VoiceTrainError(source, "no speech to tell voices apart in", "check the recording")
    embeddings = embed_windows(read, sample_rate, windows)
    named = voice is not None
    if not named:
        voice = find_voice(embeddings, windows.weight_s, settings.threshold)
    similarity = (embeddings @ voice).astype(np.float32)
    share = float(windows.weight_s[similarity >= settings.threshold].sum() / windows.weight_s.sum())
    if share < settings.min_dominant_share and not named:
        raise VoiceTrainError(
            source,
            f"no voice dominates: the voice that speaks most has {share:.0%} of the speech "
            f"(speakers.min_dominant_share is {settings.min_dominant_share:.0%})",
            "name the voice to keep with a short clip of it in speakers.reference "
            "(if only one person speaks, lower speakers.threshold)",
        )
    per_frame = frame_similarity(windows, similarity, speech)
    target = speech & (per_frame >= settings.threshold)
    if named and not target.any():
        raise VoiceTrainError(
            source,
            f"none of its speech is the reference voice's (the closest is {float(similarity.max()):.2f} "
            f"similar, speakers.threshold is {settings.threshold:g})",
            "check that speakers.reference is a clip of a voice in this recording, "
            "or lower speakers.threshold",
        )
    return SpeakerLabels(target, speech & ~target, per_frame, similarity, windows, voice, share)
