"""Choosing the export by how it sounds: at each validation, does the model sound like her?

Validation loss keeps falling while a fine-tune's output drifts into noise or away from the voice
(the failure users of every voice fine-tuner report), so with ``train.select_by: voice`` the
exported step is the trained step whose continuations of validation clips sound most like her:
at each validation the LM carries on the first ``PROMPT_S`` of up to ``PROMPTS`` validation clips
for ``CONTINUE_S`` (seeded, the same at every step), and only what it made is scored, by speaker
similarity to the validation clips' voice (:mod:`.voiceprint`; no speech scores 0). Ties go to the
lower validation loss. The base model (step 0) is scored, for reference, and never exported.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from . import voiceprint

log = logging.getLogger(__name__)

PROMPTS = 2
PROMPT_S = 2.0
CONTINUE_S = 3.0
SEED = 1234


class VoiceSelection:
    """Scores the LM being trained: the mean similarity to her voice of its continuations."""

    def __init__(self, lm, codec, clips: list[dict], description_of, device: str):
        self.lm, self.codec, self.device = lm, codec, device
        long_enough = [c for c in clips if c["frames"] / codec.frame_rate >= PROMPT_S + 1.0]
        spread = np.linspace(0, len(long_enough) - 1, min(PROMPTS, len(long_enough))).round().astype(int)
        picked = [long_enough[i] for i in spread] if long_enough else []
        self.prompts, self.descriptions, embeddings = [], [], []
        for clip in clips:
            audio, rate = _read(clip["target"])
            found = voiceprint.embedding(audio, rate)[0]
            if found is not None:
                embeddings.append(found)
            if clip in picked:
                self.prompts.append(
                    _resample(audio, rate, codec.sample_rate)[: int(PROMPT_S * codec.sample_rate)]
                )
                self.descriptions.append(description_of(clip))
        self.voice = voiceprint.unit_mean(embeddings) if embeddings else None

    @property
    def usable(self) -> bool:
        return bool(self.prompts) and self.voice is not None

    def continuations(self, step: int) -> list[np.ndarray]:
        """What the LM makes after each prompt now (seeded: the same draw at every step). The
        random generators' states are put back afterwards: training never sees this happened."""
        import random

        import torch
        from audiocraft.models import MusicGen

        was_training = self.lm.training
        saved = (torch.random.get_rng_state(), random.getstate())
        saved_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        model = MusicGen("selection", self.codec, self.lm)  # puts the LM in eval mode
        model.set_generation_params(
            use_sampling=True, top_k=250, temperature=1.0, duration=PROMPT_S + CONTINUE_S, cfg_coef=3.0
        )
        length = min(p.size for p in self.prompts)
        batch = torch.from_numpy(np.stack([p[:length] for p in self.prompts]))[:, None].to(self.device)
        try:
            torch.manual_seed(SEED)
            with torch.no_grad():
                wav = model.generate_continuation(
                    batch, self.codec.sample_rate, self.descriptions, progress=False
                )
        finally:
            self.lm.train(was_training)
            torch.random.set_rng_state(saved[0])
            random.setstate(saved[1])
            if saved_cuda is not None:
                torch.cuda.set_rng_state_all(saved_cuda)
        start = length
        return [wav[i].float().mean(dim=0).cpu().numpy()[start:] for i in range(wav.shape[0])]

    def score(self, step: int) -> float | None:
        """Mean speaker similarity of the continuations to her voice (None when not usable)."""
        if not self.usable:
            return None
        values = [
            voiceprint.similarity(voiceprint.embedding(piece, self.codec.sample_rate)[0], self.voice)
            for piece in self.continuations(step)
        ]
        value = float(np.mean(values))
        return round(value, 6) if math.isfinite(value) else None


def _read(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return audio
    import soxr

    return soxr.resample(audio, rate, target, quality="HQ").astype(np.float32)


def better(candidate: dict, best: dict | None, select_by: str) -> bool:
    """Whether a validated step ``{"val_loss", "voice"}`` beats ``best``: by voice (higher; ties to
    the lower loss) or by loss (lower). Values that are not finite numbers never win; without a
    voice score, voice selection falls back to the loss."""
    val, voice = candidate.get("val_loss"), candidate.get("voice")
    val_ok = val is not None and math.isfinite(val)
    if select_by == "voice" and voice is not None and math.isfinite(voice):
        if best is None or best.get("voice") is None:
            return True
        if voice != best["voice"]:
            return voice > best["voice"]
        return val_ok and (best.get("val_loss") is None or val < best["val_loss"])
    if not val_ok:
        return False
    return best is None or best.get("val_loss") is None or val < best["val_loss"]
