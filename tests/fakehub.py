"""A Hugging Face cache holding tiny, random stand-ins of the real models, for offline rehearsal.

The real job loads ``facebook/musicgen-small`` from the Hugging Face hub (or its cache), and
that model's parts load two more repositories: audiocraft's ``T5Conditioner`` loads ``t5-base``
through transformers, and an LM whose compression file only names ``facebook/encodec_32khz``
loads that codec through transformers too. None of that can be downloaded in the tests, and the
real weights are gigabytes. :func:`build_fake_hub` writes, instead, what a download leaves in
``<hf_home>/hub``, for repositories of the real structure with tiny dimensions and random
weights, so that with ``HF_HOME=<hf_home>`` and ``HF_HUB_OFFLINE=1`` (both set before
huggingface_hub is imported) the exact calls a user makes after downloading run offline:
``MusicGen.get_pretrained('facebook/musicgen-small')``, audiocraft's loaders, the project's own.

The repositories, each in the hub cache's layout (``models--<org>--<name>/blobs/<hash>``,
``refs/main`` holding a commit id, ``snapshots/<commit>/<file>`` as relative links to the blobs):

* ``facebook/musicgen-small``: ``state_dict.bin`` and ``compression_state_dict.bin`` as audiocraft
  exports them (``{'best_state', 'xp.cfg' (YAML text), 'version', 'exported'}``, loadable with
  ``torch.load(weights_only=True)``), built through ``audiocraft.models.builders``. The LM config
  is musicgen-small's (T5 ``t5-base`` text conditioner with word dropout, cross-attention fuser,
  delay pattern over 4 codebooks x 2048, classifier-free guidance, 30 s segments) with a small
  transformer. The compression file holds either audiocraft's own EnCodec (``codec="weights"``:
  32 kHz, 50 frames/s, 4 x 2048 codebooks, tiny filters) or a pointer to
  ``facebook/encodec_32khz`` (``codec="pointer"``, what
  ``audiocraft.utils.export.export_pretrained_compression_model`` writes).
* ``t5-base``: the real repository's ``config.json`` (d_model 768, which audiocraft hard-codes for
  t5-base, but one layer of two small heads), ``generation_config.json``, a T5ForConditionalGeneration
  ``model.safetensors``, a sentencepiece ``spiece.model`` trained in milliseconds on a few lines of
  text, and the ``tokenizer.json`` that transformers 5's ``T5Tokenizer`` reads (without it,
  transformers 5 converts ``spiece.model``, which needs protobuf).
* ``facebook/encodec_32khz`` (pointer form only): transformers' ``EncodecModel`` files
  (``config.json`` as the real one: 32 kHz mono, upsampling ratios [8, 5, 4, 4], 2048 bins,
  bandwidth 2.2 kbps = 4 codebooks at 50 frames/s, no normalisation; tiny filters),
  ``model.safetensors`` and ``preprocessor_config.json``.

Both codecs' codebooks are initialised (:func:`voice_train.presets.fill_codebooks`), so that all
four codes of a frame vary with the audio. Everything is drawn from ``seed``, and the same seed gives the same
bytes (so the same blob hashes and commit ids).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

from voice_train import presets

MUSICGEN = "facebook/musicgen-small"
T5 = "t5-base"
ENCODEC = "facebook/encodec_32khz"
CODEC_FORMS = ("weights", "pointer")

# Small dimensions for the LM and for audiocraft's EnCodec (the real model: dim 1024, 16 heads,
# 24 layers; EnCodec 64 filters, dimension 128, 2 LSTM layers).
TINY = presets.RandomPreset(
    "fakehub", dim=64, num_heads=4, num_layers=2, codec_filters=4, codec_dimension=32, codec_lstm=2
)

# musicgen-small's text conditioning (audiocraft's config/conditioner/text2music.yaml).
_T5_CONDITIONER = {
    "model": "t5",
    "t5": {"name": T5, "finetune": False, "word_dropout": 0.3, "normalize_text": False},
}

# t5-base's config.json, but for the sizes: one layer, two heads of 8, feed-forward 32.
# d_model stays 768: audiocraft's T5Conditioner builds its output projection for 768 inputs.
_T5_CONFIG = {
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 32,
    "d_kv": 8,
    "d_model": 768,
    "decoder_start_token_id": 0,
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "n_positions": 512,
    "num_heads": 2,
    "num_layers": 1,
    "output_past": True,
    "pad_token_id": 0,
    "relative_attention_num_buckets": 32,
}
_T5_GENERATION_CONFIG = {
    "_from_model_config": True,
    "decoder_start_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 0,
}
_T5_EXTRA_IDS = 100  # sentinel tokens <extra_id_0..99>, at the end of the vocabulary
_T5_TEXT = (
    "a voice singing softly over a warm piano",
    "a low calm voice reading a story aloud",
    "a bright clear female voice with a little reverb",
    "an energetic rock song with electric guitars, bass and drums",
    "pop music with a catchy melody and a steady beat",
    "the quick brown fox jumps over the lazy dog",
    "ambient synthesizer pads, slow and dreamy, 90 bpm",
    "a male voice speaking in a quiet room",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. 0123456789!?",
)

# facebook/encodec_32khz's config.json, but for the sizes (real: 64 filters, hidden size 128).
_ENCODEC_CONFIG = {
    "architectures": ["EncodecModel"],
    "audio_channels": 1,
    "chunk_length_s": None,
    "codebook_dim": 32,
    "codebook_size": 2048,
    "compress": 2,
    "dilation_growth_rate": 2,
    "hidden_size": 32,
    "kernel_size": 7,
    "last_kernel_size": 7,
    "model_type": "encodec",
    "norm_type": "weight_norm",
    "normalize": False,
    "num_filters": 4,
    "num_lstm_layers": 2,
    "num_residual_layers": 1,
    "overlap": None,
    "pad_mode": "reflect",
    "residual_kernel_size": 3,
    "sampling_rate": 32000,
    "target_bandwidths": [2.2],
    "trim_right_ratio": 1.0,
    "upsampling_ratios": [8, 5, 4, 4],
    "use_causal_conv": False,
    "use_conv_shortcut": False,
}
_ENCODEC_PREPROCESSOR = {
    "chunk_length_s": None,
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "overlap": None,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": 32000,
}

# Files that the hub stores with git LFS: their blobs are named by sha256, the others by git's sha1.
_LFS_SUFFIXES = (".bin", ".safetensors", ".model")


def build_fake_hub(
    hf_home: str | os.PathLike, codec: str = "weights", seed: int = 0, lm: presets.RandomPreset = TINY
) -> dict:
    """Write the fake repositories into the hub cache under ``hf_home``; see the module docstring.

    ``lm`` sets the LM's sizes: :data:`TINY` for the tests, or musicgen-small's own
    (``presets.RANDOM_PRESETS["musicgen-small-random"]``) to rehearse the real job's memory and speed.

    Returns ``hf_home``, ``hub`` (the cache folder), ``codec``, ``snapshots`` (repository id ->
    its snapshot folder) and ``env``: the variables that make a new process use this cache offline.
    """
    if codec not in CODEC_FORMS:
        raise ValueError(f"codec must be one of {CODEC_FORMS}, not {codec!r}")
    hf_home = Path(hf_home)
    hub = hf_home / "hub"
    with _one_thread():
        snapshots = {T5: write_repo(hub, T5, t5_files(seed))}
        if codec == "pointer":
            snapshots[ENCODEC] = write_repo(hub, ENCODEC, encodec_files(seed + 1))
        snapshots[MUSICGEN] = write_repo(hub, MUSICGEN, musicgen_files(snapshots[T5], codec, seed + 2, lm))
    return {
        "hf_home": hf_home,
        "hub": hub,
        "codec": codec,
        "snapshots": snapshots,
        "env": {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"},
    }


@contextlib.contextmanager
def _one_thread():
    """Tiny models build fastest on one thread; several wait on each other when the CPUs are busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# the cache layout


def _blob_name(filename: str, data: bytes) -> str:
    """The hub's ETag of a file: sha256 for LFS files, git's blob sha1 for the others."""
    if filename.endswith(_LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_repo(hub: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Write one model repository as a download leaves it in the cache; returns its snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    blobs = {name: _blob_name(name, data) for name, data in sorted(files.items())}
    # A commit id derived from the content, so that the same files give the same commit.
    commit = hashlib.sha1(json.dumps([repo_id, blobs]).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / blobs[name]
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def _json(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _torch_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _saved_weights(model) -> bytes:
    """A transformers model's ``model.safetensors``, as ``save_pretrained`` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return (Path(tmp) / "model.safetensors").read_bytes()


# ---------------------------------------------------------------------------------------------
# t5-base


def _protobuf_field(message: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a protobuf message (b"" if absent)."""

    def varint(pos: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = message[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return value, pos

    pos = 0
    while pos < len(message):
        key, pos = varint(pos)
        kind = key & 7
        if kind == 0:
            _, pos = varint(pos)
        elif kind == 1:
            pos += 8
        elif kind == 5:
            pos += 4
        elif kind == 2:
            size, pos = varint(pos)
            if key >> 3 == number:
                return message[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unexpected protobuf wire type {kind}")
    return b""


def _sentencepiece_model() -> bytes:
    """A unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_T5_TEXT * 4),
        model_writer=model,
        model_type="unigram",
        vocab_size=150,
        hard_vocab_limit=False,  # as many pieces as the text allows, up to 150
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _tokenizer_json(spiece: bytes) -> bytes:
    """The ``tokenizer.json`` of a sentencepiece model, as transformers' T5 tokenizer builds it.

    Built from the pieces and the normaliser's precompiled character map (read from the model's
    protobuf by hand: reading it with sentencepiece's own classes needs the protobuf package).
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    processor = spm.SentencePieceProcessor(model_proto=spiece)
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    sentinels = [(f"<extra_id_{i}>", 0.0) for i in reversed(range(_T5_EXTRA_IDS))]
    # ModelProto.normalizer_spec (field 3) .precompiled_charsmap (field 2)
    charsmap = _protobuf_field(_protobuf_field(spiece, 3), 2)
    tokenizer = T5Tokenizer(
        vocab=pieces + sentinels, _spm_precompiled_charsmap=charsmap, extra_ids=_T5_EXTRA_IDS
    )
    return tokenizer.backend_tokenizer.to_str(pretty=True).encode()


def t5_files(seed: int) -> dict[str, bytes]:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    spiece = _sentencepiece_model()
    tokenizer_json = _tokenizer_json(spiece)
    tokens = len(json.loads(tokenizer_json)["model"]["vocab"])
    config = dict(_T5_CONFIG, vocab_size=-(-tokens // 128) * 128)  # padded like t5-base's 32128
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(**config))
    return {
        "config.json": _json(config),
        "generation_config.json": _json(_T5_GENERATION_CONFIG),
        "model.safetensors": _saved_weights(model),
        "spiece.model": spiece,
        "tokenizer.json": tokenizer_json,
    }


# ---------------------------------------------------------------------------------------------
# facebook/encodec_32khz (transformers' EncodecModel)


def encodec_files(seed: int) -> dict[str, bytes]:
    import torch
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig(**_ENCODEC_CONFIG)).eval()  # its codebooks are zeros
    presets.fill_codebooks(model.encoder, [layer.codebook for layer in model.quantizer.layers], seed)
    return {
        "config.json": _json(_ENCODEC_CONFIG),
        "model.safetensors": _saved_weights(model),
        "preprocessor_config.json": _json(_ENCODEC_PREPROCESSOR),
    }


# ---------------------------------------------------------------------------------------------
# facebook/musicgen-small (audiocraft's exported LM and compression model)


def lm_config(lm: presets.RandomPreset = TINY) -> dict:
    """musicgen-small's LM config (see :data:`voice_train.presets._LM_COMMON`) with ``lm``'s sizes."""
    cfg = presets.lm_config(lm)
    cfg["conditioners"] = {
        # Older exported checkpoints carry these; audiocraft's loader deletes them before building.
        "args": {"merge_text_conditions_p": 0.25, "drop_desc_p": 0.5},
        "description": copy.deepcopy(_T5_CONDITIONER),
    }
    cfg.update(
        solver="musicgen",
        sample_rate=32000,
        channels=1,
        autocast=True,
        autocast_dtype="float16",
        compression_model_checkpoint=f"//pretrained/{ENCODEC}",
    )
    return cfg


@contextlib.contextmanager
def _t5_from(snapshot: Path):
    """While building the LM here, let audiocraft's T5Conditioner read ``t5-base`` from ``snapshot``
    (this process's huggingface_hub may point at another cache)."""
    from types import SimpleNamespace

    from audiocraft.modules import conditioners

    def local(cls):
        return SimpleNamespace(
            from_pretrained=lambda name, **kwargs: cls.from_pretrained(str(snapshot), **kwargs)
        )

    real = conditioners.T5Tokenizer, conditioners.T5EncoderModel
    conditioners.T5Tokenizer, conditioners.T5EncoderModel = local(real[0]), local(real[1])
    try:
        yield
    finally:
        conditioners.T5Tokenizer, conditioners.T5EncoderModel = real


def _audiocraft_codec(seed: int) -> dict:
    """audiocraft's EnCodec (its compression config as :mod:`voice_train.presets` writes it)."""
    import torch
    from audiocraft.models import builders
    from omegaconf import OmegaConf

    cfg = presets.compression_config(TINY)
    torch.manual_seed(seed)
    codec = builders.get_compression_model(OmegaConf.create(cfg)).eval()  # codebooks not yet initialised
    presets.fill_codebooks(codec.encoder, [layer._codebook for layer in codec.quantizer.vq.layers], seed)
    return presets._package(codec.state_dict(), cfg)


def musicgen_files(
    t5_snapshot: Path, codec: str, seed: int, lm_sizes: presets.RandomPreset = TINY
) -> dict[str, bytes]:
    import torch
    from omegaconf import OmegaConf

    from voice_train import compat

    compat.setup_audiocraft("torch")  # before audiocraft is imported (a stand-in for xformers)
    import audiocraft
    from audiocraft.models import builders

    cfg = lm_config(lm_sizes)
    torch.manual_seed(seed)
    with _t5_from(t5_snapshot):
        lm = builders.get_lm_model(OmegaConf.create(cfg))
    if codec == "weights":
        compression = _audiocraft_codec(seed + 1)
    else:
        compression = {"pretrained": ENCODEC, "exported": True, "version": audiocraft.__version__}
    return {
        "compression_state_dict.bin": _torch_bytes(compression),
        "state_dict.bin": _torch_bytes(presets._package(lm.state_dict(), cfg)),
    }
