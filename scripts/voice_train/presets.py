"""Model presets and audiocraft's pretrained-directory format.

``model.name`` in the config is one of:

* a Hugging Face id such as ``facebook/musicgen-small`` (the real job; needs the hub or its cache);
* a local directory in audiocraft's pretrained layout (``state_dict.bin`` +
  ``compression_state_dict.bin``);
* a random-init preset from :data:`RANDOM_PRESETS`: ``tiny`` (small dims, for the demo and the
  tests) or ``musicgen-small-random`` (the real model's dims, for benchmarks). These are built
  once by the ``model`` rule, written as a pretrained directory, and then loaded through the same
  loaders that ``MusicGen.get_pretrained`` uses for the real model.

Everything that imports torch or audiocraft does so inside functions, so light rules can import
the names here.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VoiceTrainError

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
SEGMENT_DURATION_S = 30  # saved in xp.cfg; MusicGen's generation needs >= ~20 s

# The LM section of musicgen-small's training config (audiocraft's musicgen_lm + small model).
_LM_COMMON = {
    "n_q": 4,
    "card": 2048,
    "hidden_scale": 4,
    "dropout": 0.0,
    "emb_lr": None,
    "activation": "gelu",
    "norm_first": True,
    "bias_ff": False,
    "bias_attn": False,
    "bias_proj": False,
    "past_context": None,
    "causal": True,
    "custom": False,
    "memory_efficient": True,
    "attention_as_float32": False,
    "layer_scale": None,
    "positional_embedding": "sin",
    "xpos": False,
    "checkpointing": "none",
    "weight_init": "gaussian",
    "depthwise_init": "current",
    "zero_bias_init": True,
    "norm": "layer_norm",
    "cross_attention": False,
    "qk_layer_norm": False,
    "qk_layer_norm_cross": False,
    "attention_dropout": None,
    "kv_repeat": 1,
    "two_step_cfg": False,
}

_SEANET_COMMON = {
    "channels": 1,
    "causal": False,
    "n_residual_layers": 1,
    "ratios": [8, 5, 4, 4],  # hop 640 at 32 kHz: 50 frames/s, as musicgen-small's EnCodec
    "activation": "ELU",
    "activation_params": {"alpha": 1.0},
    "norm": "weight_norm",
    "norm_params": {},
    "kernel_size": 7,
    "residual_kernel_size": 3,
    "last_kernel_size": 7,
    "dilation_base": 2,
    "pad_mode": "constant",
    "true_skip": True,
    "compress": 2,
    "disable_norm_outer_blocks": 0,
    "encoder": {},
    "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
}


@dataclass(frozen=True)
class RandomPreset:
    """Dimensions of a randomly initialised MusicGen (codec + LM + LUT text conditioner)."""

    name: str
    dim: int
    num_heads: int
    num_layers: int
    codec_filters: int
    codec_dimension: int
    codec_lstm: int
    text_bins: int = 1024


RANDOM_PRESETS = {
    "tiny": RandomPreset(
        "tiny", dim=128, num_heads=4, num_layers=2, codec_filters=4, codec_dimension=32, codec_lstm=0
    ),
    "musicgen-small-random": RandomPreset(
        "musicgen-small-random",
        dim=1024,
        num_heads=16,
        num_layers=24,
        codec_filters=64,
        codec_dimension=128,
        codec_lstm=2,
    ),
}


def is_random_preset(name: str) -> bool:
    return name in RANDOM_PRESETS


def is_local_dir(name: str) -> bool:
    return os.path.isdir(name)


def compression_config(preset: RandomPreset, device: str = "cpu") -> dict:
    seanet = copy.deepcopy(_SEANET_COMMON)
    seanet.update(dimension=preset.codec_dimension, n_filters=preset.codec_filters, lstm=preset.codec_lstm)
    return {
        "device": device,
        "dtype": "float32",
        "compression_model": "encodec",
        "encodec": {
            "autoencoder": "seanet",
            "quantizer": "rvq",
            "sample_rate": 32000,
            "channels": 1,
            "causal": False,
            "renormalize": False,
        },
        "seanet": seanet,
        "rvq": {
            "n_q": 4,
            "q_dropout": False,
            "bins": 2048,
            "decay": 0.99,
            "kmeans_init": True,
            "kmeans_iters": 5,  # not used: fill_codebooks initialises the codebooks at build time
            "threshold_ema_dead_code": 2,
            "orthogonal_reg_weight": 0.0,
            "orthogonal_reg_active_codes_only": False,
        },
    }


def lm_config(preset: RandomPreset, device: str = "cpu") -> dict:
    lm = dict(_LM_COMMON)
    lm.update(dim=preset.dim, num_heads=preset.num_heads, num_layers=preset.num_layers)
    return {
        "device": device,
        "dtype": "float32",
        "lm_model": "transformer_lm",
        "transformer_lm": lm,
        "codebooks_pattern": {
            "modeling": "delay",
            "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0, "empty_initial": 0},
        },
        "classifier_free_guidance": {"training_dropout": 0.2, "inference_coef": 3.0},
        "attribute_dropout": {},
        "fuser": {
            "cross_attention_pos_emb": False,
            "cross_attention_pos_emb_scale": 1,
            "sum": [],
            "prepend": [],
            "cross": ["description"],
            "input_interpolate": [],
        },
        # A lookup-table text conditioner: the whole description is one token (no download).
        "conditioners": {
            "description": {
                "model": "lut",
                "lut": {"n_bins": preset.text_bins, "dim": preset.dim, "tokenizer": "noop"},
            }
        },
        "dataset": {"segment_duration": SEGMENT_DURATION_S},
    }


def _package(state: dict, cfg: dict) -> dict:
    import audiocraft
    from omegaconf import OmegaConf

    # xp.cfg as YAML text, so that torch.load(weights_only=True) can read the file.
    return {
        "best_state": state,
        "xp.cfg": OmegaConf.to_yaml(OmegaConf.create(cfg)),
        "version": audiocraft.__version__,
        "exported": True,
    }


def _codebook_init_audio(seed: int, pieces: int = 8, seconds: float = 4.0):
    """Voice-like signals (harmonic tones with random pitch, tilt and level, plus noise) for the
    k-means initialisation of a fresh codec's codebooks; independent of any user's data."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rate = 32000
    t = np.arange(int(seconds * rate)) / rate
    out = np.zeros((pieces, 1, t.size), dtype=np.float32)
    for i in range(pieces):
        f0 = rng.uniform(80, 300) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        tilt = rng.uniform(0.5, 1.5)
        tone = sum(np.sin(h * phase) / h**tilt for h in range(1, 25) if h * 300 < rate / 2)
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(0.5, 3) * t), 0, None)
        noise = rng.standard_normal(t.size) * rng.uniform(0.001, 0.05)
        signal = tone * envelope + noise
        out[i, 0] = signal / np.max(np.abs(signal)) * 10 ** (rng.uniform(-30, -3) / 20)
    return out


def fill_codebooks(encoder, books, seed: int) -> None:
    """Initialise a fresh codec's residual codebooks: 2048 distinct entries each, drawn around
    the residual of the encoder's latents (of voice-like tones) that the codebook quantises.

    A fresh codec would initialise them by k-means over its first training batch, but a few
    seconds of audio hold fewer frames than a codebook has entries: the first codebook copies
    them and leaves the later ones (almost) nothing to quantise, so their codes barely vary.
    ``books`` are the codebook modules, first to last; audiocraft's and transformers' EnCodec
    name their buffers alike (``embed``, ``embed_avg``, ``cluster_size``, ``inited``).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = encoder(torch.from_numpy(_codebook_init_audio(seed)))  # [B, D, T]
        residual = latents.transpose(1, 2).reshape(-1, latents.shape[1])
        for book in books:
            size, dim = book.embed.shape
            embed = residual.mean(0) + residual.std(0) * torch.randn(size, dim, generator=generator)
            book.embed.copy_(embed)
            book.embed_avg.copy_(embed)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(1.0)
            residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]


def build_random_pretrained(preset_name: str, out_dir: str | os.PathLike, seed: int) -> None:
    """Build a randomly initialised MusicGen from a fixed seed and write it as a pretrained dir."""
    import torch
    from audiocraft.models import builders
    from omegaconf import OmegaConf

    from .fsutil import atomic_dir

    preset = RANDOM_PRESETS[preset_name]
    codec_cfg = compression_config(preset)
    lm_cfg = lm_config(preset)
    torch.manual_seed(seed)
    codec = builders.get_compression_model(OmegaConf.create(codec_cfg)).eval()
    fill_codebooks(codec.encoder, [layer._codebook for layer in codec.quantizer.vq.layers], seed)
    torch.manual_seed(seed + 1)
    lm = builders.get_lm_model(OmegaConf.create(lm_cfg))
    with atomic_dir(out_dir) as tmp:
        torch.save(_package(codec.state_dict(), codec_cfg), Path(tmp) / CODEC_FILE)
        torch.save(_package(lm.state_dict(), lm_cfg), Path(tmp) / LM_FILE)


def model_files(name: str, cache_dir: str | None = None) -> tuple[str, str]:
    """Local paths of (LM file, compression file) for a model name; downloads from the hub if allowed."""
    if is_local_dir(name):
        lm_path, codec_path = os.path.join(name, LM_FILE), os.path.join(name, CODEC_FILE)
        for path in (lm_path, codec_path):
            if not os.path.isfile(path):
                raise VoiceTrainError(
                    path,
                    "missing from the model directory",
                    "point model.name at a directory holding state_dict.bin and compression_state_dict.bin",
                )
        return lm_path, codec_path
    return hub_file(name, LM_FILE, cache_dir), hub_file(name, CODEC_FILE, cache_dir)


def hub_file(repo_id: str, filename: str, cache_dir: str | None = None) -> str:
    """A file of a hub model from the local cache or the hub, with a clear error if neither works."""
    from importlib.metadata import version

    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            cache_dir=cache_dir or os.environ.get("AUDIOCRAFT_CACHE_DIR"),
            library_name="audiocraft",
            library_version=version("audiocraft"),
        )
    except Exception as exc:  # huggingface_hub raises many kinds: offline, not found, network
        why = "HF_HUB_OFFLINE is set and it is not in the cache" if offline else f"{type(exc).__name__}"
        raise VoiceTrainError(
            f"{repo_id}/{filename}",
            f"model weights are neither in the Hugging Face cache nor downloadable ({why})",
            "run once with internet access (unset HF_HUB_OFFLINE) to fill the cache, or set model.name "
            "to a local pretrained directory or to 'tiny' for the offline demo",
        ) from exc


# A pointer package is a few hundred bytes; real codec weights are megabytes.
_POINTER_MAX_BYTES = 64 * 1024
_HF_CODEC_FILES = ("config.json", "model.safetensors")


def codec_pointer(codec_file: str | os.PathLike) -> str | None:
    """The model a compression file points to (``{'pretrained': 'facebook/encodec_32khz'}``, the
    form audiocraft's export writes for MusicGen's hub models), or None when it holds weights."""
    import torch

    if os.path.getsize(codec_file) > _POINTER_MAX_BYTES:
        return None
    package = torch.load(codec_file, map_location="cpu", weights_only=True)
    pointer = package.get("pretrained") if isinstance(package, dict) else None
    return str(pointer) if pointer is not None else None


def pointed_codec_files(pointer: str) -> dict[str, str]:
    """Local files of the codec a pointer names, by name: what its identity is hashed from."""
    if os.path.exists(pointer):
        return {os.path.basename(pointer): pointer}
    return {name: hub_file(pointer, name) for name in _HF_CODEC_FILES}


def codec_file_for_name(name: str, cache_dir: str | None = None) -> str:
    if is_local_dir(name):
        return model_files(name, cache_dir)[1]
    return hub_file(name, CODEC_FILE, cache_dir)


@contextlib.contextmanager
def _hub_guard(name: str):
    """Turn a failed download inside audiocraft (EnCodec, T5) into one clear error line."""
    try:
        yield
    except OSError as exc:
        if is_local_dir(name):
            raise
        raise VoiceTrainError(
            name,
            f"a part of the model could not be loaded from the hub or its cache ({exc})".replace("\n", " "),
            "run once with internet access (unset HF_HUB_OFFLINE) so the Hugging Face cache holds it",
        ) from exc


def load_compression(name: str, device: str = "cpu"):
    """The model's compression model (EnCodec), through audiocraft's own loader."""
    from audiocraft.models import loaders

    path = name if is_local_dir(name) else os.path.dirname(codec_file_for_name(name))
    with _hub_guard(name):
        return loaders.load_compression_model(path, device=device)


def lm_dir(name: str) -> str:
    """The directory audiocraft's LM loader reads for a model name (a local one, or the hub
    file's folder in the cache)."""
    return name if is_local_dir(name) else os.path.dirname(model_files(name)[0])


def load_lm_state(name: str) -> dict:
    """The LM's own state dict, as stored (on the CPU): the base that LoRA updates merge into."""
    from audiocraft.models import loaders

    path = lm_dir(name)
    with _hub_guard(name):
        return loaders.load_lm_model_ckpt(path)["best_state"]


def load_generation_lm(name: str, device: str = "cpu"):
    """The model's LM as ``MusicGen.get_pretrained`` builds it (float16 on a GPU), through
    audiocraft's own loader: the base model that a fine-tune is compared with."""
    from audiocraft.models import loaders

    path = lm_dir(name)
    with _hub_guard(name):
        return loaders.load_lm_model(path, device=device)


def load_lm(name: str, device: str = "cpu"):
    """The model's LM in float32 (for training), through audiocraft's own loader.

    On a GPU, audiocraft's loader builds the LM in float16; training keeps float32 master
    weights (autocast does the rest), so the weights are loaded again as stored.
    """
    lm = load_generation_lm(name, device=device).float()
    if str(device) != "cpu":
        lm.load_state_dict(load_lm_state(name))
    return lm
