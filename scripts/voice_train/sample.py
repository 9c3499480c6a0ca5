"""Rule sample: listen to the fine-tuned model.

Two WAVs per voice, from the fine-tuned checkpoint and the base model's codec
(:func:`voice_train.export.load_finetuned`):

* ``text``: generated from the voice's description alone;
* ``continuation``: the first seconds of a validation clip, carried on by the model (the voice
  should continue in the same timbre).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import VoiceTrainError
from .fsutil import atomic_path, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSettings:
    duration_s: float = 8.0
    prompt_s: float = 3.0
    top_k: int = 250
    temperature: float = 1.0
    cfg_coef: float = 3.0
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_config(cls, section: dict) -> SampleSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV atomically (soundfile; no ffmpeg needed)."""
    import soundfile as sf

    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0.999:
        audio = audio * (0.999 / peak)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio.astype(np.float32), sample_rate, subtype="PCM_16", format="WAV")


def pick_prompt_clip(manifest: dict) -> dict:
    entries = [e for e in manifest["entries"] if e["split"] == "valid"] or manifest["entries"]
    if not entries:
        raise VoiceTrainError("manifest", "has no clips for a continuation prompt", "check the prepare step")
    return entries[0]


def verify_checkpoint(checkpoint: str, expect_sha256: str) -> None:
    """Refuse a checkpoint that is not what training recorded (missing, truncated or changed)."""
    path = Path(checkpoint)
    if not path.is_file() or sha256_file(path) != expect_sha256:
        raise VoiceTrainError(
            path,
            "not the checkpoint that train_status.json recorded (missing, truncated or changed)",
            "rebuild it with: snakemake --cores all --forcerun train",
        )


def generate_samples(
    checkpoint: str,
    base_model: str,
    manifest: dict,
    description: str,
    settings: SampleSettings,
    text_wav: str,
    continuation_wav: str,
    attention_backend: str = "torch",
    expect_sha256: str | None = None,
) -> dict:
    """Both WAVs from the fine-tuned checkpoint (with ``base_model``'s codec); returns what was made."""
    import soundfile as sf
    import torch

    from . import compat
    from .export import load_finetuned
    from .precision import resolve_device

    if expect_sha256 is not None:
        verify_checkpoint(checkpoint, expect_sha256)
    compat.setup_audiocraft(attention_backend)
    device = resolve_device(settings.device, "sample.device")
    model = load_finetuned(checkpoint, base_model, device=device)
    model.set_generation_params(
        use_sampling=True,
        top_k=settings.top_k,
        temperature=settings.temperature,
        duration=settings.duration_s,
        cfg_coef=settings.cfg_coef,
    )
    torch.manual_seed(settings.seed)
    text = model.generate([description], progress=False)[0, 0].float().cpu().numpy()
    write_wav(text_wav, text, model.sample_rate)

    clip = pick_prompt_clip(manifest)
    prompt, rate = sf.read(clip["target"], dtype="float32", always_2d=True)
    prompt = prompt.mean(axis=1)[: int(settings.prompt_s * rate)]
    torch.manual_seed(settings.seed + 1)
    prompt_tensor = torch.from_numpy(prompt)[None, None].to(device)
    cont = (
        model.generate_continuation(prompt_tensor, rate, [description], progress=False)[0, 0]
        .float()
        .cpu()
        .numpy()
    )
    write_wav(continuation_wav, cont, model.sample_rate)
    info = {
        "sample_rate": model.sample_rate,
        "text": {"path": str(text_wav), "duration_s": len(text) / model.sample_rate},
        "continuation": {
            "path": str(continuation_wav),
            "duration_s": len(cont) / model.sample_rate,
            "prompt": clip["target"],
            "prompt_s": len(prompt) / rate,
        },
    }
    log.info("samples: %s", info)
    return info
