"""Rule encode: each clip's EnCodec codes, computed once and cached compactly.

The token cache is one ``.npz`` file (no pickles) with:

* ``codes``: int16 ``[n_q, total_frames]``, every clip's codes one after another;
* ``offsets``: int64 ``[n_clips + 1]``, where each clip starts and ends in ``codes``;
* ``meta``: a JSON string: schema, the codec's identity (model name and the sha256 of its
  compression checkpoint), frame rate, cardinality, n_q, sample rate, and per clip its name,
  split, description, source sha256 and frame count.

A cache made by another codec is refused by :func:`load_tokens` (the ``model`` rule's output and
the model name are in the encode rule's inputs and params, so Snakemake reruns encode anyway).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VoiceTrainError
from .fsutil import atomic_path, sha256_file
from .progress import progress

TOKENS_SCHEMA = "voice_tokens/1"
log = logging.getLogger(__name__)
REBUILD_TOKENS = "rebuild it with: snakemake --cores all --forcerun encode"


@dataclass
class TokenSet:
    """The decoded token cache."""

    codes: np.ndarray  # int16 [K, total]
    offsets: np.ndarray  # int64 [N + 1]
    meta: dict

    @property
    def clips(self) -> list[dict]:
        return self.meta["clips"]

    def clip_codes(self, index: int) -> np.ndarray:
        return self.codes[:, self.offsets[index] : self.offsets[index + 1]]

    def content_sha256(self) -> str:
        """A hash of the codes and metadata (the .npz file's own bytes carry zip timestamps)."""
        digest = hashlib.sha256()
        for array in (self.codes, self.offsets):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(json.dumps(self.meta, sort_keys=True).encode())
        return digest.hexdigest()

    def indices(self, split: str) -> list[int]:
        return [i for i, clip in enumerate(self.clips) if clip["split"] == split]


def codec_identity(model_name: str, codec_file: str) -> dict:
    """What made a token cache: the model, its compression file, and where that file only points
    to another codec (MusicGen's hub models point to ``facebook/encodec_32khz``), that codec's files."""
    from .presets import codec_pointer, pointed_codec_files

    identity = {"model": model_name, "compression_sha256": sha256_file(Path(codec_file))}
    pointer = codec_pointer(codec_file)
    if pointer is not None:
        identity["pretrained"] = pointer
        identity["pretrained_sha256"] = {
            name: sha256_file(path) for name, path in sorted(pointed_codec_files(pointer).items())
        }
    return identity


def valid_frames(samples: int, sample_rate: int, frame_rate: float) -> int:
    """Frames of a clip's codes that hold its audio, rounded down as audiocraft's MusicGen solver
    does (its padding mask starts at ``floor(samples / sample_rate * frame_rate)``)."""
    return math.floor(float(samples) / sample_rate * frame_rate)


def _read_clip(path: str, sample_rate: int) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise VoiceTrainError(
            path,
            f"clip is {rate} Hz but the model's codec expects {sample_rate} Hz",
            "set prepare.sample_rate to the model's rate (32000 for MusicGen) and rerun",
        )
    return audio.mean(axis=1)


def encode_manifest(
    manifest: dict,
    model_name: str,
    device: str = "cpu",
    batch_seconds: float = 120.0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Encode every clip of a dataset manifest with the model's compression model."""
    import torch

    from . import presets

    codec = presets.load_compression(model_name, device=device)
    codec_file = presets.codec_file_for_name(model_name)
    entries = manifest["entries"]
    if not entries:
        raise VoiceTrainError(
            "manifest", "has no clips to encode", "check the prepare step's log and settings"
        )
    sample_rate = codec.sample_rate
    # Sort by length so each batch pads little; keep the manifest order in the output.
    lengths = [int(round(e["duration_s"] * sample_rate)) for e in entries]
    order = sorted(range(len(entries)), key=lambda i: lengths[i])
    codes_by_clip: dict[int, np.ndarray] = {}
    batch: list[int] = []

    def flush() -> None:
        audio = [_read_clip(entries[i]["target"], sample_rate) for i in batch]
        longest = max(len(a) for a in audio)
        padded = np.zeros((len(audio), 1, longest), dtype=np.float32)
        for row, a in enumerate(audio):
            padded[row, 0, : len(a)] = a
        with torch.inference_mode():
            codes, scale = codec.encode(torch.from_numpy(padded).to(device))
        if scale is not None:
            raise VoiceTrainError(
                model_name, "has a scaled codec, which MusicGen LMs do not use", "use a MusicGen model"
            )
        codes = codes.cpu().numpy()
        for row, (i, a) in enumerate(zip(batch, audio)):
            frames = min(codes.shape[-1], valid_frames(len(a), sample_rate, codec.frame_rate))
            codes_by_clip[i] = codes[row, :, :frames].astype(np.int16)
        batch.clear()

    budget = int(batch_seconds * sample_rate)
    for i in progress(order, desc="encode", unit="clip"):
        if batch and lengths[i] * (len(batch) + 1) > budget:
            flush()
        batch.append(i)
    if batch:
        flush()

    card = int(codec.cardinality)
    if card > np.iinfo(np.int16).max:
        raise VoiceTrainError(
            model_name, f"codec cardinality {card} does not fit int16", "use a MusicGen model"
        )
    arrays = [codes_by_clip[i] for i in range(len(entries))]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([a.shape[1] for a in arrays])
    meta = {
        "schema": TOKENS_SCHEMA,
        "codec": codec_identity(model_name, codec_file),
        "frame_rate": float(codec.frame_rate),
        "cardinality": card,
        "n_q": int(codec.num_codebooks),
        "sample_rate": int(sample_rate),
        "clips": [
            {
                "name": Path(e["target"]).stem,
                "target": e["target"],
                "sha256": e["sha256"],
                "split": e["split"],
                "description": e["description"],
                "frames": int(a.shape[1]),
            }
            for e, a in zip(entries, arrays)
        ],
    }
    return np.concatenate(arrays, axis=1), offsets, meta


def write_tokens(path: str | os.PathLike, codes: np.ndarray, offsets: np.ndarray, meta: dict) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, codes=codes, offsets=offsets, meta=np.array(json.dumps(meta, sort_keys=True)))


def load_tokens(path: str | os.PathLike, expect_codec: dict | None = None) -> TokenSet:
    """Read a token cache; refuse a corrupt one or one made by a different codec."""
    try:
        with np.load(path, allow_pickle=False) as data:
            codes, offsets, meta = data["codes"], data["offsets"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise VoiceTrainError(path, f"token cache is unreadable ({exc})", REBUILD_TOKENS) from exc
    if meta.get("schema") != TOKENS_SCHEMA or codes.dtype != np.int16 or offsets[-1] != codes.shape[1]:
        raise VoiceTrainError(path, "token cache is corrupt or from another version", REBUILD_TOKENS)
    if expect_codec is not None and meta["codec"] != expect_codec:
        raise VoiceTrainError(
            path,
            f"token cache was made by codec {meta['codec']}, not {expect_codec}",
            "rerun the encode step (snakemake --forcerun encode)",
        )
    return TokenSet(codes=codes, offsets=offsets, meta=meta)
