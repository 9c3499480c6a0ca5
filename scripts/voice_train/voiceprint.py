"""How much a piece of audio sounds like her, and how good it sounds: the measures of rule evaluate.

* **Speaker similarity**: the cosine between Resemblyzer voice embeddings (the GE2E encoder of
  :mod:`voice_train.speakers`, CPU, weights inside its wheel) of a piece, over the speech the
  voice activity detector finds in it, and of her voice (the mean embedding of real clips). A
  piece with less than ``MIN_SPEECH_S`` of speech is not speech: it scores 0 (not her voice) and
  is counted as such, instead of being embedded whole (a tone or noise scores about 0.3 that way).
* **Quality**: DNSMOS P.835 (Microsoft's speech-quality predictor; the ONNX models ship inside the
  ``speechmos`` wheel, run by onnxruntime), mean opinion scores 1-5 of the signal (``sig``), the
  background (``bak``) and overall (``ovrl``), on 16 kHz audio.
"""

from __future__ import annotations

import numpy as np

MIN_SPEECH_S = 0.5  # less detected speech than this: the piece is not speech
DNSMOS_RATE = 16000


def embedding(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray | None, float]:
    """The voice embedding of a piece over its detected speech (None when it holds less than
    ``MIN_SPEECH_S``), and the seconds of speech found."""
    import torch

    from .speakers import FRAME_S, clip_speech, embed_clip

    audio = np.ascontiguousarray(audio, dtype=np.float32)
    speech = clip_speech(audio, sample_rate)
    speech_s = float(np.count_nonzero(speech) * FRAME_S)
    if speech_s < MIN_SPEECH_S:
        return None, speech_s
    # One thread: a piece is a few windows, and a second thread only spins (on a busy 2-core
    # machine, seconds of CPU per piece instead of 0.1 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return embed_clip(audio, sample_rate, speech), speech_s
    finally:
        torch.set_num_threads(threads)


def unit_mean(embeddings: list[np.ndarray]) -> np.ndarray:
    """Their mean as a unit vector: the voice of several clips."""
    mean = np.mean(embeddings, axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def similarity(piece: np.ndarray | None, voice: np.ndarray) -> float:
    """Cosine of a piece's embedding with the voice; 0 for a piece without speech."""
    return 0.0 if piece is None else float(piece @ voice)


def quality_available() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("speechmos") is not None
        and importlib.util.find_spec("onnxruntime") is not None
    )


def quality(audio: np.ndarray, sample_rate: int) -> dict | None:
    """DNSMOS ``{"ovrl", "sig", "bak"}`` of a piece (None without the ``speechmos`` wheel, or for
    a piece of silence)."""
    if not quality_available() or not np.any(audio):
        return None
    import soxr
    from speechmos import dnsmos

    audio16 = soxr.resample(np.asarray(audio, dtype=np.float32), sample_rate, DNSMOS_RATE, quality="HQ")
    peak = float(np.abs(audio16).max())
    if peak > 1.0:  # DNSMOS takes samples in [-1, 1]
        audio16 = audio16 / peak
    scores = dnsmos.run(audio16.astype(np.float32), DNSMOS_RATE)
    return {key: round(float(scores[f"{key}_mos"]), 3) for key in ("ovrl", "sig", "bak")}
