"""Rule evaluate: does it sound like her?

The measure is speaker similarity: the cosine between Resemblyzer voice embeddings (the GE2E
encoder of :mod:`voice_train.speakers`) of a piece of audio and of the voice, where the voice is
the mean embedding of the held-out validation clips (``split == "valid"`` in the manifest), which
training never saw. Three groups are scored against it:

* ``finetuned``: samples of the fine-tuned checkpoint;
* ``base``: samples of the base model (``model.name``), with the same prompts and seeds;
* ``ceiling``: real training clips, the same audio the continuations are asked to carry on.

Each model makes ``samples`` text-conditioned samples (the voice's description) and ``samples``
continuations. A continuation's prompt is the first ``sample.prompt_s`` seconds of a training
clip (validation clips stay held out), and only what the model generated after it is embedded,
never the real prompt. The ceiling embeds the real clip's own audio after the prompt, as long as
a generated part. Each piece is embedded over the speech the voice activity detector finds in it
(over all of it when it holds too little speech: a model that makes no speech yet still gets a
number). Generation is seeded, so a rerun gives the same numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import VoiceTrainError

log = logging.getLogger(__name__)

SCHEMA = "voice_eval/1"
GROUPS = ("finetuned", "base", "ceiling")
# The sample settings that evaluate reuses (its prompts and its sampling).
SAMPLE_KEYS = ("prompt_s", "top_k", "temperature", "cfg_coef")
MIN_TAIL_S = 1.0  # a prompt clip needs this much real audio after the prompt (the ceiling's piece)
MIN_SPEECH_S = 0.5  # less detected speech than this: the whole piece is embedded
ENCODER = "Resemblyzer GE2E voice encoder (cosine similarity of voice embeddings)"


@dataclass(frozen=True)
class EvaluateSettings:
    """Config section ``evaluate``, plus the ``sample`` keys in ``SAMPLE_KEYS``."""

    enabled: bool = True
    samples: int = 4  # samples per kind (text, continuation) and model
    duration_s: float = 4.0  # seconds generated per sample (after the prompt, for continuations)
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
    """Which clips of the manifest play which part, and why (``notes``)."""

    reference: list[dict]  # the voice: held-out clips
    reference_split: str
    prompts: list[dict]  # continuation prompts; their real tails are the ceiling
    prompt_split: str
    notes: list[str]


@dataclass(frozen=True)
class Piece:
    """One piece of audio to score: what it is and the audio itself (mono float32)."""

    kind: str  # text / continuation / real
    index: int
    audio: np.ndarray
    prompt: str | None = None  # the clip whose first seconds prompted it (or whose tail it is)


def evenly(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def plan_clips(entries: list[dict], samples: int, prompt_s: float) -> ClipPlan:
    """The reference, the prompts and the ceiling from the manifest's clips.

    The reference is every validation clip; prompts are up to ``samples`` training clips (evenly
    spread) long enough for ``prompt_s`` plus ``MIN_TAIL_S`` of real audio after it. Without
    validation clips the reference is the training clips that are not prompts (or, with none
    left, all clips: the ceiling then shares clips with the reference); without a training clip
    long enough, prompts come from the validation clips. Each fallback is said in ``notes``.
    """
    train = [e for e in entries if e.get("split") == "train"]
    valid = [e for e in entries if e.get("split") == "valid"]
    notes: list[str] = []
    long_enough = lambda e: e.get("duration_s", 0.0) >= prompt_s + MIN_TAIL_S  # noqa: E731
    prompts, prompt_split = evenly([e for e in train if long_enough(e)], samples), "train"
    if not prompts:
        prompts, prompt_split = evenly([e for e in valid if long_enough(e)], samples), "valid"
        notes.append(
            f"no training clip is {prompt_s + MIN_TAIL_S:g} s long: continuation prompts come from "
            "validation clips"
            if prompts
            else f"no clip is {prompt_s + MIN_TAIL_S:g} s long: no continuations and no ceiling"
        )
    reference, reference_split = valid, "valid"
    if not valid:
        prompt_targets = {e["target"] for e in prompts}
        reference, reference_split = [e for e in train if e["target"] not in prompt_targets], "train"
        notes.append("the manifest has no validation clips: the voice is taken from training clips")
        if not reference:
            reference, reference_split = list(entries), "all"
            notes.append("too few clips to keep the reference apart: the ceiling shares its clips")
    return ClipPlan(reference, reference_split, prompts, prompt_split, notes)


def generated_tail(audio: np.ndarray, sample_rate: int, prompt_s: float) -> np.ndarray:
    """What a continuation generated: its audio after the ``prompt_s`` seconds of prompt."""
    return audio[int(round(prompt_s * sample_rate)) :]


def real_tail(audio: np.ndarray, sample_rate: int, prompt_s: float, duration_s: float) -> np.ndarray:
    """A real clip's own continuation: its ``duration_s`` seconds after the first ``prompt_s``."""
    start = int(round(prompt_s * sample_rate))
    return audio[start : start + int(round(duration_s * sample_rate))]


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


def voice_embedding(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """The voice embedding of a piece over its detected speech (all of it with less than
    ``MIN_SPEECH_S``), and the seconds of speech found."""
    import torch

    from .speakers import FRAME_S, clip_speech, embed_clip

    audio = np.ascontiguousarray(audio, dtype=np.float32)
    speech = clip_speech(audio, sample_rate)
    speech_s = float(np.count_nonzero(speech) * FRAME_S)
    # One thread: a piece is a few windows, and a second thread only spins (on a busy 2-core
    # machine, seconds of CPU per piece instead of 0.1 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedding = embed_clip(audio, sample_rate, speech if speech_s >= MIN_SPEECH_S else None)
    finally:
        torch.set_num_threads(threads)
    return embedding, speech_s


def read_mono(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def reference_voice(clips: list[dict]) -> np.ndarray:
    """The voice: the mean of the clips' embeddings, as a unit vector."""
    embeddings = [voice_embedding(*read_mono(e["target"]))[0] for e in clips]
    mean = np.mean(embeddings, axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def score_pieces(pieces: list[Piece], sample_rate: int, voice: np.ndarray) -> dict:
    """A group's result: each piece's similarity to ``voice`` and the summaries (all, per kind)."""
    items = []
    for piece in pieces:
        embedding, speech_s = voice_embedding(piece.audio, sample_rate)
        items.append(
            {
                "kind": piece.kind,
                "index": piece.index,
                "prompt": piece.prompt,
                "duration_s": round(piece.audio.size / sample_rate, 3),
                "speech_s": round(speech_s, 2),
                "similarity": round(float(embedding @ voice), 4),
            }
        )
    group = {"all": summarise([i["similarity"] for i in items])}
    for kind in sorted({p.kind for p in pieces}):
        group[kind] = summarise([i["similarity"] for i in items if i["kind"] == kind])
    group["items"] = items
    return group


def read_prompts(plan: ClipPlan, settings: EvaluateSettings) -> tuple[np.ndarray, int, list[Piece]]:
    """The prompts as one array ``(prompts, samples)`` at the clips' rate, that rate, and the
    ceiling's pieces (each prompt clip's own audio after its prompt)."""
    prompts, ceiling, rate = [], [], 0
    for i, entry in enumerate(plan.prompts):
        audio, rate = read_mono(entry["target"])
        prompts.append(audio[: int(round(settings.prompt_s * rate))])
        tail = real_tail(audio, rate, settings.prompt_s, settings.duration_s)
        ceiling.append(Piece("real", i, tail, entry["target"]))
    length = min((p.size for p in prompts), default=0)
    return np.stack([p[:length] for p in prompts]) if prompts else np.zeros((0, 0), np.float32), rate, ceiling


def generate_pieces(
    model,
    description: str,
    prompts: np.ndarray,
    prompt_rate: int,
    names: list[str],
    settings: EvaluateSettings,
) -> list[Piece]:
    """A model's samples: ``settings.samples`` from the description, then one continuation per
    prompt (its generated part only). Seeded before each batch: every model gets the same seeds."""
    import torch

    def sampling(duration_s: float) -> None:
        model.set_generation_params(
            use_sampling=True,
            top_k=settings.top_k,
            temperature=settings.temperature,
            duration=duration_s,
            cfg_coef=settings.cfg_coef,
        )

    sampling(settings.duration_s)
    torch.manual_seed(settings.seed)
    text = model.generate([description] * settings.samples, progress=False)
    pieces = [Piece("text", i, _mono(text[i])) for i in range(text.shape[0])]
    if len(prompts):
        sampling(settings.prompt_s + settings.duration_s)
        torch.manual_seed(settings.seed + 1)
        batch = torch.from_numpy(np.ascontiguousarray(prompts))[:, None]
        out = model.generate_continuation(batch, prompt_rate, [description] * len(prompts), progress=False)
        for i, name in enumerate(names):
            tail = generated_tail(_mono(out[i]), model.sample_rate, settings.prompt_s)
            pieces.append(Piece("continuation", i, tail, name))
    return pieces


def _mono(wav) -> np.ndarray:
    return wav.float().mean(dim=0).cpu().numpy()


def format_similarity(summary: dict | None, sign: str = "+/-", missing: str = "N/A") -> str:
    """A group's figure as the report block writes it: ``0.612 +/- 0.041 (n=8)`` (mean, standard
    deviation, count), or ``missing``."""
    if not summary:
        return missing
    return f"{summary['mean']:.3f} {sign} {summary['std']:.3f} (n={summary['n']})"


def group_figures(result: dict | None) -> dict[str, str]:
    """Group -> its figure (``format_similarity``) from a ``voice_eval.json``; N/A for each group
    of a missing, skipped or unreadable result."""
    groups = (result or {}).get("groups") or {}
    completed = (result or {}).get("status") == "completed"
    return {g: format_similarity((groups.get(g) or {}).get("all") if completed else None) for g in GROUPS}


def headline(result: dict) -> str:
    """One line for the console and the log."""
    if result.get("status") != "completed":
        return result.get("note") or result.get("status", "not evaluated")
    figures = group_figures(result)
    return (
        f"similarity to the held-out voice: fine-tuned {figures['finetuned']}, base {figures['base']}, "
        f"ceiling (real clips) {figures['ceiling']}"
    )


def _since(start: float) -> float:
    return time.monotonic() - start


def demo_note(model_name: str, steps: object) -> str:
    """What a random-init preset's figures mean (the demo's ``tiny``)."""
    return (
        f"model.name is {model_name!r}, a randomly initialised demo model trained for {steps} steps: "
        "its samples are not speech (its codec is random too, and decodes any codes to much the same "
        "sound), so the fine-tuned and the base model's samples both score near the floor of this "
        "measure, what a sound that is not her voice scores. The figures show that the measure runs, "
        "not what a fine-tune of a real model reaches; the ceiling is what her own voice scores."
    )


def skipped_result(voice: str) -> dict:
    return {
        "schema": SCHEMA,
        "voice": voice,
        "status": "skipped",
        "note": "evaluate.enabled is false: no samples were made or scored",
    }


def evaluation_result(
    voice: str, plan: ClipPlan, settings: EvaluateSettings, groups: dict, meta: dict, note: str | None
) -> dict:
    """The contents of ``voice_eval.json``."""
    means = {g: ((groups.get(g) or {}).get("all") or {}).get("mean") for g in GROUPS}
    gain = None if None in (means["finetuned"], means["base"]) else means["finetuned"] - means["base"]
    return {
        "schema": SCHEMA,
        "voice": voice,
        "status": "completed",
        "encoder": ENCODER,
        **meta,
        "reference": {
            "split": plan.reference_split,
            "n": len(plan.reference),
            "clips": [e["target"] for e in plan.reference],
        },
        "prompts": {
            "split": plan.prompt_split,
            "prompt_s": settings.prompt_s,
            "clips": [e["target"] for e in plan.prompts],
            "embedded": "only the generated part after the prompt (the ceiling: the clip's own audio "
            "after it)",
        },
        "settings": asdict(settings),
        "finetuned_minus_base": None if gain is None else round(gain, 4),
        "groups": groups,
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
    description: str,
    settings: EvaluateSettings,
    attention_backend: str = "torch",
) -> dict:
    """Score the fine-tuned model, the base model and real clips against the held-out voice."""
    from . import compat
    from .export import load_base, load_finetuned
    from .precision import resolve_device
    from .presets import is_random_preset
    from .sample import verify_checkpoint

    verify_checkpoint(checkpoint, status["checkpoint_sha256"])
    if not manifest["entries"]:
        raise VoiceTrainError("manifest", "has no clips to take the voice from", "check the prepare step")
    plan = plan_clips(manifest["entries"], settings.samples, settings.prompt_s)
    started = time.monotonic()
    voice_print = reference_voice(plan.reference)
    log.info("the voice: %d %s clips (%.1f s)", len(plan.reference), plan.reference_split, _since(started))
    for note in plan.notes:
        log.info("note: %s", note)
    prompts, prompt_rate, ceiling = read_prompts(plan, settings)
    names = [e["target"] for e in plan.prompts]
    compat.setup_audiocraft(attention_backend)
    device = resolve_device(settings.device, "evaluate.device")
    groups: dict = {}
    for group, load in (
        ("finetuned", lambda: load_finetuned(checkpoint, base_model, device=device)),
        ("base", lambda: load_base(base_model, device=device)),
    ):
        began = time.monotonic()
        model = load()
        pieces = generate_pieces(model, description, prompts, prompt_rate, names, settings)
        generated = _since(began)
        groups[group] = score_pieces(pieces, model.sample_rate, voice_print)
        del model
        log.info(
            "%s: %d samples, loaded and generated in %.1f s, scored in %.1f s",
            group,
            len(pieces),
            generated,
            _since(began) - generated,
        )
    groups["ceiling"] = score_pieces(ceiling, prompt_rate, voice_print) if ceiling else None
    log.info("evaluated in %.1f s", _since(started))
    note = demo_note(model_name, status.get("step")) if is_random_preset(model_name) else None
    meta = {
        "model": model_name,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": status["checkpoint_sha256"],
    }
    return evaluation_result(voice, plan, settings, groups, meta, note)
