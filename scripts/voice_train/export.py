"""The exported checkpoint: audiocraft's LM format, and loading it back as a MusicGen.

The checkpoint ``tts_voice_train_musicgen_small.pt`` is what audiocraft's loaders read
(``{'best_state', 'xp.cfg' (YAML text), 'version', 'exported'}``, plus our ``voice_train``
metadata), so ``loaders.load_lm_model(checkpoint)`` loads it with ``torch.load(weights_only=True)``.
The codec is the base model's own, unchanged by fine-tuning: :func:`load_finetuned` pairs the two.
There is no second copy of the LM beside it: Google Drive has no links, and a copy would cost
the LM's size again (1.7 GB for musicgen-small).
"""

from __future__ import annotations

import os

from .fsutil import write_save


def export_checkpoint(lm_cfg, weights: dict, metadata: dict, checkpoint_path: str | os.PathLike) -> None:
    """Write the fine-tuned LM as an audiocraft checkpoint (float32 weights, CPU config), complete
    or absent (:func:`.fsutil.write_save`: it raises ``SaveFailed`` naming the bytes)."""
    import audiocraft
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(lm_cfg, resolve=True))
    cfg.device = "cpu"
    cfg.dtype = "float32"
    package = {
        "best_state": {k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
        "xp.cfg": OmegaConf.to_yaml(cfg),
        "version": audiocraft.__version__,
        "exported": True,
        "voice_train": metadata,
    }
    write_save(package, checkpoint_path)


def load_finetuned(checkpoint: str | os.PathLike, base_model: str, device: str = "cpu", name: str = "voice"):
    """A MusicGen of the fine-tuned LM (``checkpoint``) and the base model's codec.

    ``base_model`` is what training started from: a hub id (from the Hugging Face cache), a
    pretrained directory, or a random preset's built directory.
    """
    from audiocraft.models import MusicGen, loaders

    from . import presets

    lm = loaders.load_lm_model(str(checkpoint), device=device)
    codec = presets.load_compression(base_model, device=device)
    return MusicGen(name, codec, lm)


def load_base(base_model: str, device: str = "cpu", name: str = "base"):
    """A MusicGen of the base model as fine-tuning started from it (``base_model`` as in
    :func:`load_finetuned`): its own LM and the same codec."""
    from audiocraft.models import MusicGen

    from . import presets

    lm = presets.load_generation_lm(base_model, device=device)
    return MusicGen(name, presets.load_compression(base_model, device=device), lm)
