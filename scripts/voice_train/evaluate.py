"""Rule evaluate: does it sound like her? Scored on the test block only, which training never read.

Prompts are test clips (``split == "test"``, blocks of the recording apart from training: see
:mod:`.splits`). For each prompt, four pieces of what follows it are scored against her voice:

* ``finetuned``: the fine-tuned model's continuation; ``base``: the base model's, same prompt,
  same seed;
* ``ceiling``: her real audio after the prompt; ``roundtrip``: that audio encoded and decoded by
  the model's own codec, the best any model on this codec can reach.

Each model also makes ``samples`` pieces from the description alone. Her voice for a piece is
the mean voice embedding of the other test clips (never the clip it continues). Every piece is
scored by speaker similarity (:mod:`.voiceprint`; a piece without speech scores 0 and is
counted), DNSMOS quality, and the copy check (:mod:`.copycheck`: the longest run of its codes
found in the training token cache). The pieces are kept as WAVs beside ``voice_eval.json``, with a
page that plays them side by side. Generation is seeded, so a rerun gives the same figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import voiceprint
from .copycheck import longest_shared_run
from .errors import VoiceTrainError
from .eval_figures import COPY_S, SCHEMA, demo_note

log = logging.getLogger(__name__)

# The sample settings that evaluate reuses (its prompts and its sampling).
SAMPLE_KEYS = ("prompt_s", "top_k", "temperature", "cfg_coef")
MIN_TAIL_S = 1.0  # a prompt clip needs this much real audio after the prompt (the ceiling's piece)
ENCODER = "Resemblyzer GE2E voice encoder (cosine similarity of voice embeddings)"
QUALITY = "DNSMOS P.835 (speechmos wheel, onnxruntime): mean opinion scores 1-5"


@dataclass(frozen=True)
class EvaluateSettings:
    """Config section ``evaluate``, plus the ``sample`` keys in ``SAMPLE_KEYS``."""

    enabled: bool = True
    samples: int = 4  # continuations (one per prompt) and text samples per model
    duration_s: float = 4.0  # seconds generated per piece (after the prompt, for continuations)
    seed: int = 0
    device: str = "auto"
    prompt_s: float = 3.0
    top_k: int = 250
    temperature: float = 1.0
    cfg_coef: float = 3.0

    @classmethod
    def from_config(cls, evaluate: dict, sample: dict) -> EvaluateSettings:
        names = {f.name for f in fields(cls)}
        merged = {**{k: sample[k] for k in SAMPLE_KEYS if k in sample}, **evaluate}
        return cls(**{k: v for k, v in merged.items() if k in names})


@dataclass(frozen=True)
class ClipPlan:
    """Which held-out clips play which part, and why (``notes``)."""

    held_out: list[dict]  # her voice: the test clips (or what stands in for them)
    split: str
    prompts: list[dict]  # the held-out clips long enough to be prompted
    notes: list[str]


@dataclass
class Piece:
    """One piece of audio to score (mono float32), what it is, and its codes when known."""

    kind: str  # text / continuation
    index: int
    audio: np.ndarray
    prompt: str | None = None  # the clip whose first seconds prompted it (or whose tail it is)
    codes: np.ndarray | None = None  # [K, T], the codec's codes of ``audio``


def evenly(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def plan_clips(entries: list[dict], samples: int, prompt_s: float) -> ClipPlan:
    """Her voice and the prompts from the test clips; each stand-in is said in ``notes``.

    Without test clips (a short recording, or ``prepare.test_fraction: 0``) the validation clips
    stand in (they chose the exported step, so the figures lean its way); without either, no clip
    is held out and nothing is scored."""
    notes: list[str] = []
    held, split = [e for e in entries if e.get("split") == "test"], "test"
    if not held:
        held, split = [e for e in entries if e.get("split") == "valid"], "valid"
        notes.append(
            "no test clips: the validation clips stand in for them; they chose the exported step, "
            "so the fine-tuned figure leans its way"
        )
    if not held:
        raise VoiceTrainError(
            "manifest",
            "holds no test or validation clip to score against",
            "set prepare.test_fraction above 0 (a longer recording if it has under 3 clips) and rerun",
        )
    long_enough = [e for e in held if e.get("duration_s", 0.0) >= prompt_s + MIN_TAIL_S]
    prompts = evenly(long_enough, samples)
    if not prompts:
        notes.append(f"no {split} clip is {prompt_s + MIN_TAIL_S:g} s long: no continuations, no ceiling")
    if len(held) < 2:
        notes.append(f"one {split} clip only: each piece is compared with the clip it continues")
    return ClipPlan(held, split, prompts, notes)


def read_mono(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def summarise(values: list[float]) -> dict | None:
    """Mean, standard deviation (population), count, min and max, rounded; None for no values."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(array.mean()), 4),
        "std": round(float(array.std()), 4),
        "n": int(array.size),
        "min": round(float(array.min()), 4),
        "max": round(float(array.max()), 4),
    }


# --- the generators: a MusicGen, or in the tests a planted one ------------------------------


class MusicGenGenerator:
    """What evaluate asks of a model: seeded pieces from a description and continuations of prompts,
    with their codes (the LM's own tokens, after the prompt)."""

    def __init__(self, model, settings: EvaluateSettings):
        self.model, self.settings = model, settings
        self.sample_rate = model.sample_rate

    def _params(self, duration_s: float) -> None:
        s = self.settings
        self.model.set_generation_params(
            use_sampling=True,
            top_k=s.top_k,
            temperature=s.temperature,
            duration=duration_s,
            cfg_coef=s.cfg_coef,
        )

    def texts(self, description: str, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        import torch

        self._params(self.settings.duration_s)
        torch.manual_seed(seed)
        wav, tokens = self.model.generate([description] * n, progress=False, return_tokens=True)
        return [(_mono(wav[i]), tokens[i].cpu().numpy()) for i in range(n)]

    def continuations(
        self, prompts: np.ndarray, prompt_rate: int, description: str, seed: int
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        import torch

        s = self.settings
        self._params(s.prompt_s + s.duration_s)
        torch.manual_seed(seed)
        batch = torch.from_numpy(np.ascontiguousarray(prompts))[:, None]
        wav, tokens = self.model.generate_continuation(
            batch, prompt_rate, [description] * len(prompts), progress=False, return_tokens=True
        )
        start = int(round(s.prompt_s * self.sample_rate))
        frames = int(np.ceil(prompts.shape[1] / prompt_rate * self.model.frame_rate))  # the prompt's codes
        return [(_mono(wav[i])[start:], tokens[i, :, frames:].cpu().numpy()) for i in range(len(prompts))]


def _mono(wav) -> np.ndarray:
    return wav.float().mean(dim=0).cpu().numpy()


def generate_pieces(
    generator,
    description: str,
    prompts: np.ndarray,
    prompt_rate: int,
    names: list[str],
    settings: EvaluateSettings,
) -> list[Piece]:
    """A model's pieces: ``settings.samples`` from the description, then one continuation per
    prompt (its generated part only). Seeded: every model gets the same seeds."""
    pieces = [
        Piece("text", i, audio, None, codes)
        for i, (audio, codes) in enumerate(generator.texts(description, settings.samples, settings.seed))
    ]
    if len(prompts):
        made = generator.continuations(prompts, prompt_rate, description, settings.seed + 1)
        pieces += [Piece("continuation", i, a, name, c) for i, ((a, c), name) in enumerate(zip(made, names))]
    return pieces


def real_pieces(plan: ClipPlan, settings: EvaluateSettings) -> tuple[np.ndarray, int, list[Piece]]:
    """The prompts as one array ``(prompts, samples)`` at the clips' rate, that rate, and the
    ceiling's pieces (each prompt clip's own audio after its prompt)."""
    prompts, ceiling, rate = [], [], 0
    for i, entry in enumerate(plan.prompts):
        audio, rate = read_mono(entry["target"])
        start = int(round(settings.prompt_s * rate))
        prompts.append(audio[:start])
        ceiling.append(
            Piece(
                "continuation",
                i,
                audio[start : start + int(round(settings.duration_s * rate))],
                entry["target"],
            )
        )
    length = min((p.size for p in prompts), default=0)
    stacked = np.stack([p[:length] for p in prompts]) if prompts else np.zeros((0, 0), np.float32)
    return stacked, rate, ceiling


def round_trip(pieces: list[Piece], codec, rate: int) -> list[Piece]:
    """The same audio through the model's codec (encoded, decoded), with its codes."""
    out = []
    for piece in pieces:
        codes, audio = codec_round_trip(codec, piece.audio, rate)
        out.append(Piece(piece.kind, piece.index, audio, piece.prompt, codes))
    return out


def codec_round_trip(codec, audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``audio`` at ``rate`` encoded and decoded by ``codec``: (codes [K, T], audio at ``rate``)."""
    import soxr
    import torch

    device = next(codec.parameters()).device
    x = soxr.resample(audio, rate, codec.sample_rate, quality="HQ") if rate != codec.sample_rate else audio
    with torch.no_grad():
        codes, scale = codec.encode(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device)
        )
        decoded = codec.decode(codes, scale)[0].float().mean(dim=0).cpu().numpy()
    if rate != codec.sample_rate:
        decoded = soxr.resample(decoded, codec.sample_rate, rate, quality="HQ")
    return codes[0].cpu().numpy(), decoded[: audio.size]


# --- scoring -------------------------------------------------------------------------------


@dataclass
class Judge:
    """What every piece is scored against: her voice (one embedding per held-out clip), the
    training codes (for the copy check) and the codec that makes codes of audio without them."""

    voices: dict[str, np.ndarray]  # held-out clip -> its embedding
    train_codes: list[np.ndarray]
    cardinality: int
    frame_rate: float
    codec: object | None = None
    quality: bool = True  # DNSMOS of every piece (about a second of CPU each)

    def voice_for(self, prompt: str | None) -> np.ndarray:
        """Her voice for a piece: the held-out clips but the one it continues (all of them when
        there is no other)."""
        others = [v for k, v in self.voices.items() if k != prompt] or list(self.voices.values())
        return voiceprint.unit_mean(others)

    def codes_of(self, piece: Piece, rate: int) -> np.ndarray | None:
        if piece.codes is not None:
            return piece.codes
        if self.codec is None:
            return None
        return codec_round_trip(self.codec, piece.audio, rate)[0]

    def score(self, pieces: list[Piece], rate: int, copy_check: bool = True) -> dict:
        """A group's result: each piece's similarity, speech, quality and copy, and the summaries."""
        items = []
        for piece in pieces:
            embedding, speech_s = voiceprint.embedding(piece.audio, rate)
            codes = self.codes_of(piece, rate) if copy_check else None
            frames = (
                longest_shared_run(codes, self.train_codes, self.cardinality) if codes is not None else None
            )
            items.append(
                {
                    "kind": piece.kind,
                    "index": piece.index,
                    "prompt": piece.prompt,
                    "duration_s": round(piece.audio.size / rate, 3),
                    "speech_s": round(speech_s, 2),
                    "speech": embedding is not None,
                    "similarity": round(voiceprint.similarity(embedding, self.voice_for(piece.prompt)), 4),
                    "quality": voiceprint.quality(piece.audio, rate) if self.quality else None,
                    "copy_s": None if frames is None else round(frames / self.frame_rate, 2),
                }
            )
        return group_summary(items, sorted({p.kind for p in pieces}))


def group_summary(items: list[dict], kinds: list[str]) -> dict:
    group: dict = {"all": summarise([i["similarity"] for i in items])}
    for kind in kinds:
        group[kind] = summarise([i["similarity"] for i in items if i["kind"] == kind])
    copies = [i["copy_s"] for i in items if i["copy_s"] is not None]
    group["no_speech"] = sum(not i["speech"] for i in items)
    group["copy_share"] = round(sum(c >= COPY_S for c in copies) / len(copies), 4) if copies else None
    group["longest_copy_s"] = max(copies) if copies else None
    scores = [i["quality"] for i in items if i["quality"]]
    group["quality"] = (
        {k: round(float(np.mean([q[k] for q in scores])), 3) for k in ("ovrl", "sig", "bak")}
        if scores
        else None
    )
    group["items"] = items
    return group


def training_codes(tokens_path: str) -> tuple[list[np.ndarray], int, float]:
    """The training split's codes per clip, the cardinality and the frame rate of the token cache."""
    from .tokens import load_tokens

    cache = load_tokens(tokens_path)
    codes = [cache.clip_codes(i) for i in cache.indices("train")]
    return codes, int(cache.meta["cardinality"]), float(cache.meta["frame_rate"])


def write_wavs(folder: Path, groups: dict[str, tuple[list[Piece], int]]) -> dict[str, list[str]]:
    """Each group's pieces (at its rate) as WAVs in ``folder`` (emptied first); group -> names."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.wav"):
        old.unlink()
    names: dict[str, list[str]] = {}
    for group, (pieces, rate) in groups.items():
        for piece in pieces:
            name = f"{group}_{piece.kind}_{piece.index}.wav"
            sf.write(str(folder / name), np.clip(piece.audio, -1.0, 1.0), rate, subtype="PCM_16")
            names.setdefault(group, []).append(name)
    return names


def evaluate_pieces(
    plan: ClipPlan,
    generators: dict[str, object],
    judge: Judge,
    description: str,
    settings: EvaluateSettings,
    wav_dir: Path | None = None,
) -> tuple[dict, dict]:
    """Generate and score every group; (groups, the WAV file names per group)."""
    prompts, rate, ceiling = real_pieces(plan, settings)
    names = [e["target"] for e in plan.prompts]
    made: dict[str, tuple[list[Piece], int]] = {}
    groups: dict = {}
    for group, generator in generators.items():
        began = time.monotonic()
        pieces = generate_pieces(generator, description, prompts, rate, names, settings)
        made[group] = (pieces, generator.sample_rate)
        groups[group] = judge.score(pieces, generator.sample_rate)
        log.info("%s: %d pieces, made and scored in %.1f s", group, len(pieces), time.monotonic() - began)
    if ceiling:
        made["ceiling"] = (ceiling, rate)
        groups["ceiling"] = judge.score(ceiling, rate)
        if judge.codec is not None:
            trip = round_trip(ceiling, judge.codec, rate)
            made["roundtrip"] = (trip, rate)
            groups["roundtrip"] = judge.score(trip, rate)
    wavs = write_wavs(wav_dir, made) if wav_dir is not None else {}
    return groups, wavs


def evaluation_result(
    voice: str,
    plan: ClipPlan,
    settings: EvaluateSettings,
    groups: dict,
    meta: dict,
    wavs: dict,
    note: str | None,
) -> dict:
    """The contents of ``voice_eval.json``."""
    means = {g: ((groups.get(g) or {}).get("all") or {}).get("mean") for g in groups}
    gain = None if None in (means.get("finetuned"), means.get("base")) else means["finetuned"] - means["base"]
    reach = means.get("roundtrip")
    return {
        "schema": SCHEMA,
        "voice": voice,
        "status": "completed",
        "encoder": ENCODER,
        "quality_measure": QUALITY if voiceprint.quality_available() else None,
        **meta,
        "held_out": {
            "split": plan.split,
            "n": len(plan.held_out),
            "clips": [e["target"] for e in plan.held_out],
        },
        "prompts": {
            "prompt_s": settings.prompt_s,
            "clips": [e["target"] for e in plan.prompts],
            "scored": "only what follows the prompt; her voice for a piece leaves out the clip it continues",
        },
        "settings": asdict(settings),
        "finetuned_minus_base": None if gain is None else round(gain, 4),
        "roundtrip_minus_finetuned": None
        if None in (reach, means.get("finetuned"))
        else round(reach - means["finetuned"], 4),
        "groups": groups,
        "wavs": wavs,
        "notes": plan.notes,
        "note": note,
    }


def evaluate_voice(
    voice: str,
    checkpoint: str,
    base_model: str,
    model_name: str,
    manifest: dict,
    status: dict,
    tokens_path: str,
    description: str,
    settings: EvaluateSettings,
    wav_dir: str | Path | None = None,
    attention_backend: str = "torch",
) -> dict:
    """Score the fine-tuned model, the base model, her real test audio and its round trip."""
    from . import compat, presets
    from .export import load_base, load_finetuned
    from .precision import resolve_device
    from .sample import verify_checkpoint

    verify_checkpoint(checkpoint, status["checkpoint_sha256"])
    plan = plan_clips(manifest["entries"], settings.samples, settings.prompt_s)
    for note in plan.notes:
        log.info("note: %s", note)
    started = time.monotonic()
    voices = {e["target"]: voiceprint.embedding(*read_mono(e["target"]))[0] for e in plan.held_out}
    voices = {k: v for k, v in voices.items() if v is not None}
    if not voices:
        raise VoiceTrainError(
            "manifest", f"its {plan.split} clips hold no speech the encoder hears", "check the prepare step"
        )
    compat.setup_audiocraft(attention_backend)
    device = resolve_device(settings.device, "evaluate.device")
    train_codes, cardinality, frame_rate = training_codes(tokens_path)
    codec = presets.load_compression(base_model, device=device)
    judge = Judge(voices, train_codes, cardinality, frame_rate, codec)
    generators = {
        "finetuned": MusicGenGenerator(load_finetuned(checkpoint, base_model, device=device), settings),
        "base": MusicGenGenerator(load_base(base_model, device=device), settings),
    }
    groups, wavs = evaluate_pieces(
        plan, generators, judge, description, settings, Path(wav_dir) if wav_dir else None
    )
    log.info("evaluated in %.1f s", time.monotonic() - started)
    note = demo_note(model_name, status.get("step")) if presets.is_random_preset(model_name) else None
    meta = {
        "model": model_name,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": status["checkpoint_sha256"],
    }
    return evaluation_result(voice, plan, settings, groups, meta, wavs, note)
