"""Rule evaluate's logic on tiny inputs: which clips play which part, what gets embedded, the
figures, the json and the report keys. The models are stand-ins; the speaker encoder is real."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from voice_train import evaluate
from voice_train.demo import synthesize_voice
from voice_train.evaluate import (
    EvaluateSettings,
    Piece,
    format_similarity,
    generate_pieces,
    group_figures,
    plan_clips,
    score_pieces,
    summarise,
)
from voice_train.fsutil import sha256_file
from voice_train.report import EXTRA_KEYS, RUNBOOK_KEYS, VoiceFiles, format_block, voice_fields

SR = 16000
KEYS = ("voice_similarity_finetuned", "voice_similarity_base", "voice_similarity_ceiling")


def entry(name: str, split: str, duration_s: float) -> dict:
    return {"target": f"clips/{name}.flac", "split": split, "duration_s": duration_s}


class StandInModel:
    """What evaluate asks of audiocraft's MusicGen, at 16 kHz: noise from torch's global RNG
    after the prompt (so equal seeds give equal samples), ``level`` loud."""

    sample_rate = SR

    def __init__(self, level: float = 0.1):
        self.level, self.calls = level, []

    def set_generation_params(self, duration: float, **sampling) -> None:
        self.duration = duration

    def _noise(self, n: int, samples: int) -> torch.Tensor:
        return (torch.rand(n, 1, samples) - 0.5) * self.level

    def generate(self, descriptions, progress=False):
        self.calls.append(("generate", list(descriptions)))
        return self._noise(len(descriptions), int(self.duration * SR))

    def generate_continuation(self, prompt, prompt_sample_rate, descriptions, progress=False):
        assert prompt_sample_rate == SR and prompt.dim() == 3
        self.calls.append(("continuation", list(descriptions)))
        rest = self._noise(prompt.shape[0], int(self.duration * SR) - prompt.shape[-1])
        return torch.cat([prompt, rest], dim=-1)


@pytest.fixture(scope="module")
def voice_audio() -> np.ndarray:
    """25 s of the demo's synthetic voice, 16 kHz mono."""
    return synthesize_voice(duration_s=25, sample_rate=SR, channels=1, seed=2).audio[:, 0]


def test_summarise_gives_mean_spread_count_and_range():
    assert summarise([0.5, 0.7, 0.6]) == {"mean": 0.6, "std": 0.0816, "n": 3, "min": 0.5, "max": 0.7}
    assert summarise([]) is None
    assert format_similarity(summarise([0.5, 0.7, 0.6])) == "0.600 +/- 0.082 (n=3)"
    assert format_similarity(None) == "N/A"


def test_settings_take_the_sample_keys_evaluate_reuses_and_its_own_seed():
    sample = {"duration_s": 8, "prompt_s": 2, "top_k": 50, "temperature": 0.9, "cfg_coef": 2.0, "seed": 7}
    settings = EvaluateSettings.from_config({"samples": 3, "duration_s": 4, "seed": 1}, sample)
    assert (settings.samples, settings.duration_s, settings.seed) == (3, 4, 1)
    assert (settings.prompt_s, settings.top_k, settings.temperature, settings.cfg_coef) == (2, 50, 0.9, 2.0)


def test_prompts_come_from_long_enough_training_clips_and_the_voice_from_the_held_out_ones():
    entries = [entry(f"t{i}", "train", 2.0 + i) for i in range(8)] + [entry("v0", "valid", 5.0)]
    plan = plan_clips(entries, samples=3, prompt_s=3.0)
    assert [e["target"] for e in plan.reference] == ["clips/v0.flac"] and plan.reference_split == "valid"
    # t0 (2 s) and t1 (3 s) are too short for 3 s of prompt and 1 s after it; t2..t7 spread evenly.
    assert [e["target"] for e in plan.prompts] == ["clips/t2.flac", "clips/t4.flac", "clips/t7.flac"]
    assert plan.prompt_split == "train" and plan.notes == []


def test_without_validation_clips_the_voice_comes_from_other_training_clips_and_says_so():
    entries = [entry(f"t{i}", "train", 6.0) for i in range(4)]
    plan = plan_clips(entries, samples=2, prompt_s=2.0)
    prompts = {e["target"] for e in plan.prompts}
    assert len(prompts) == 2 and plan.reference_split == "train"
    assert plan.reference and not prompts & {e["target"] for e in plan.reference}
    assert any("no validation clips" in note for note in plan.notes)


def test_without_long_training_clips_prompts_come_from_validation_clips_and_says_so():
    plan = plan_clips([entry("t0", "train", 2.0), entry("v0", "valid", 6.0)], samples=2, prompt_s=2.0)
    assert [e["target"] for e in plan.prompts] == ["clips/v0.flac"] and plan.prompt_split == "valid"
    assert any("validation clips" in note for note in plan.notes)
    none = plan_clips([entry("t0", "train", 2.0), entry("v0", "valid", 2.0)], samples=2, prompt_s=2.0)
    assert none.prompts == [] and any("no continuations and no ceiling" in n for n in none.notes)


def test_only_the_generated_part_of_a_continuation_is_kept_and_both_models_get_the_same_seeds(voice_audio):
    settings = EvaluateSettings(samples=2, duration_s=1.0, prompt_s=0.5, seed=3)
    prompts = np.stack([voice_audio[:8000], voice_audio[16000:24000]])
    runs = []
    for model in (StandInModel(), StandInModel()):
        runs.append(generate_pieces(model, "a calm voice", prompts, SR, ["a.flac", "b.flac"], settings))
    pieces = runs[0]
    assert [(p.kind, p.index, p.prompt) for p in pieces] == [
        ("text", 0, None),
        ("text", 1, None),
        ("continuation", 0, "a.flac"),
        ("continuation", 1, "b.flac"),
    ]
    for piece in pieces:
        assert piece.audio.size == SR, "1 s generated; the 0.5 s prompt is not part of it"
        assert np.abs(piece.audio).max() <= 0.05, "the generated noise, never the prompt's voice"
    assert model.calls == [("generate", ["a calm voice"] * 2), ("continuation", ["a calm voice"] * 2)]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(*runs)), "the same seeds for each model"


def test_the_voice_scores_above_noise_per_kind_and_overall(voice_audio):
    voice = evaluate.voice_embedding(voice_audio[10 * SR :], SR)[0]
    noise = np.random.default_rng(0).normal(0, 0.05, 3 * SR).astype(np.float32)
    pieces = [
        Piece("text", 0, voice_audio[: 3 * SR]),
        Piece("text", 1, noise),
        Piece("continuation", 0, voice_audio[3 * SR : 6 * SR], "a.flac"),
    ]
    group = score_pieces(pieces, SR, voice)
    similarity = [item["similarity"] for item in group["items"]]
    assert similarity[0] - similarity[1] >= 0.15 and similarity[2] - similarity[1] >= 0.15
    assert group["text"]["n"] == 2 and group["continuation"]["n"] == 1 and group["all"]["n"] == 3
    assert group["items"][1]["speech_s"] < evaluate.MIN_SPEECH_S <= group["items"][0]["speech_s"]
    assert score_pieces(pieces, SR, voice) == group, "the same audio, the same figures"


def write_clips(folder, voice_audio) -> dict:
    """A manifest of 4 training clips and 1 validation clip of the synthetic voice."""
    entries = []
    for i, split in enumerate(["train"] * 4 + ["valid"]):
        path = folder / f"c{i}.flac"
        sf.write(str(path), voice_audio[i * 5 * SR : (i + 1) * 5 * SR], SR)
        entries.append({"target": str(path), "split": split, "duration_s": 5.0})
    return {"entries": entries}


def test_the_result_holds_every_group_the_plan_and_the_demo_note(tmp_path, voice_audio, monkeypatch):
    checkpoint = tmp_path / "lm.pt"
    checkpoint.write_bytes(b"weights")
    status = {"checkpoint_sha256": sha256_file(checkpoint), "step": 120}
    monkeypatch.setattr("voice_train.compat.setup_audiocraft", lambda backend: None)
    monkeypatch.setattr("voice_train.export.load_finetuned", lambda *a, **k: StandInModel(0.2))
    monkeypatch.setattr("voice_train.export.load_base", lambda *a, **k: StandInModel(0.1))
    settings = EvaluateSettings(samples=2, duration_s=1.0, prompt_s=1.0, device="cpu")
    args = ("v1", str(checkpoint), "results/models/tiny", "tiny", write_clips(tmp_path, voice_audio), status)
    result = evaluate.evaluate_voice(*args, "a calm voice", settings)
    assert result["status"] == "completed" and result["checkpoint_sha256"] == status["checkpoint_sha256"]
    assert result["reference"]["split"] == "valid" and result["reference"]["n"] == 1
    assert result["prompts"]["split"] == "train" and len(result["prompts"]["clips"]) == 2
    assert set(result["groups"]) == {"finetuned", "base", "ceiling"}
    for group in ("finetuned", "base"):
        assert {k: v["n"] for k, v in result["groups"][group].items() if k != "items"} == {
            "all": 4,
            "text": 2,
            "continuation": 2,
        }
    ceiling = result["groups"]["ceiling"]
    assert ceiling["all"]["n"] == 2 and [i["duration_s"] for i in ceiling["items"]] == [1.0, 1.0]
    assert ceiling["all"]["mean"] > result["groups"]["finetuned"]["all"]["mean"], "real voice over noise"
    assert "'tiny'" in result["note"] and "120 steps" in result["note"] and "near the floor" in result["note"]
    assert json.loads(json.dumps(result)) == result
    again = evaluate.evaluate_voice(*args, "a calm voice", settings)
    assert again == result, "seeded: a rerun gives the same figures"


def test_a_checkpoint_that_is_not_the_trained_one_is_refused(tmp_path):
    checkpoint = tmp_path / "lm.pt"
    checkpoint.write_bytes(b"changed")
    with pytest.raises(evaluate.VoiceTrainError, match="not the checkpoint"):
        evaluate.evaluate_voice(
            "v1",
            str(checkpoint),
            "m",
            "tiny",
            {"entries": []},
            {"checkpoint_sha256": "0" * 64},
            "x",
            EvaluateSettings(),
        )


def report_files(tmp_path, evaluation: dict | None) -> VoiceFiles:
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"not a real checkpoint")
    if evaluation is not None:
        (tmp_path / "voice_eval.json").write_text(json.dumps(evaluation))
    return VoiceFiles(
        "v1",
        "none.flac",
        "none.json",
        "none_manifest.json",
        checkpoint_file="ckpt.pt",
        evaluation="voice_eval.json",
    )


def completed(sha: str) -> dict:
    groups = {
        "finetuned": {"all": summarise([0.61, 0.65])},
        "base": {"all": summarise([0.42, 0.5])},
        "ceiling": None,
    }
    return {"status": "completed", "checkpoint_sha256": sha, "groups": groups}


def test_the_report_block_carries_the_three_figures_after_the_runbook_keys(tmp_path):
    report_files(tmp_path, None)
    fields = voice_fields(report_files(tmp_path, completed(sha256_file(tmp_path / "ckpt.pt"))), tmp_path)
    assert [fields[k] for k in KEYS] == ["0.630 +/- 0.020 (n=2)", "0.460 +/- 0.040 (n=2)", "N/A"]
    keys = [line.split(": ")[0] for line in format_block(fields).splitlines()[1:]]
    assert keys[:20] == list(RUNBOOK_KEYS) and set(KEYS) <= set(keys[20:]) and keys[-1] == "failed_rule_log"
    assert set(KEYS) <= set(EXTRA_KEYS)


@pytest.mark.parametrize(
    "evaluation",
    [None, {"status": "skipped", "note": "evaluate.enabled is false"}, "other checkpoint", "not json"],
)
def test_the_figures_are_na_when_missing_skipped_stale_or_unreadable(tmp_path, evaluation):
    if evaluation == "other checkpoint":
        evaluation = completed("0" * 64)
    files = report_files(tmp_path, None if evaluation == "not json" else evaluation)
    if evaluation == "not json":
        (tmp_path / "voice_eval.json").write_text("{truncated")
    fields = voice_fields(files, tmp_path)
    assert [fields[k] for k in KEYS] == ["N/A"] * 3
    assert group_figures(None) == dict.fromkeys(evaluate.GROUPS, "N/A")
