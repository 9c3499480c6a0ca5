"""The real job's model path, offline: ``facebook/musicgen-small`` with its T5 text conditioner.

The model comes from a Hugging Face cache written by ``tests/fakehub.py``: the real structure
(T5 ``t5-base`` conditioner through transformers, cross-attention, delay pattern, 32 kHz EnCodec
with 4 x 2048 codebooks) with tiny dimensions and random weights, read with
``HF_HUB_OFFLINE=1`` through the calls Colab makes after its download. The audio is the demo's
synthetic voice (``voice_train.demo.synthesize_voice``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from conftest import ROOT, copy_workflow, report_fields, snakemake
from fakehub import MUSICGEN
from voice_train import compat, presets, tokens
from voice_train.batches import Batcher, text_seed
from voice_train.demo import synthesize_voice
from voice_train.fsutil import sha256_file
from voice_train.sample import SampleSettings, generate_samples
from voice_train.train import TrainSettings, train

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
DESCRIPTION = "a warm, unhurried older woman's voice telling a long story by the fire"
# The real config's training choices (gradient checkpointing, two micro-batches per step), short.
REAL = TrainSettings(
    steps=6,
    batch_size=2,
    grad_accum=2,
    gradient_checkpointing=True,
    segment_s=2,
    eval_every=3,
    log_every=1,
    warmup_steps=2,
    lr=1e-3,
    device="cpu",
)


@pytest.fixture(scope="module")
def real_tokens(fake_hub, tmp_path_factory) -> str:
    """Six 3-second clips (4 train, 2 valid) encoded by the fake musicgen-small's codec."""
    compat.setup_audiocraft("torch")
    root = tmp_path_factory.mktemp("real")
    audio = synthesize_voice(duration_s=18, sample_rate=32000, channels=1, seed=7).audio.reshape(-1)
    entries = []
    for i in range(6):
        path = root / f"clip_{i:03d}.flac"
        sf.write(path, audio[i * 96000 : (i + 1) * 96000], 32000)
        split = "valid" if i in (1, 4) else "train"
        entries.append(
            {"target": str(path), "sha256": sha256_file(path), "duration_s": 3.0, "split": split}
            | {"description": DESCRIPTION}
        )
    codes, offsets, meta = tokens.encode_manifest({"entries": entries}, MUSICGEN)
    path = root / "tokens.npz"
    tokens.write_tokens(path, codes, offsets, meta)
    return str(path)


def run(tmp: Path, tokens_path: str, settings: TrainSettings = REAL, name: str = "run"):
    out = tmp / name
    return train(
        tokens_path=tokens_path,
        model_name=MUSICGEN,
        settings=settings,
        checkpoint_path=str(out / "tts_voice_train_musicgen_small.pt"),
        status_path=str(out / "train_status.json"),
        state_dir=str(out / "state"),
        voice="real",
    )


def test_the_hub_model_loads_with_its_t5_conditioner_and_cross_attention(fake_hub):
    from audiocraft.modules.conditioners import T5Conditioner

    lm = presets.load_lm(MUSICGEN)
    conditioner = lm.condition_provider.conditioners["description"]
    assert isinstance(conditioner, T5Conditioner) and conditioner.name == "t5-base"
    assert conditioner.word_dropout == 0.3
    assert all(layer.cross_attention is not None for layer in lm.transformer.layers)
    assert (lm.num_codebooks, lm.card) == (4, 2048)


def test_evaluate_loads_the_hub_model_as_its_base_and_generates_offline(fake_hub):
    from voice_train.export import load_base

    model = load_base(MUSICGEN)
    stored = presets.load_lm_state(MUSICGEN)
    assert all(
        torch.equal(value, stored[key]) for key, value in model.lm.state_dict().items() if key in stored
    )
    model.set_generation_params(duration=0.5)
    assert model.generate([DESCRIPTION], progress=False).shape == (1, 1, 16000)


def test_the_token_cache_names_the_codec_the_pointer_leads_to(real_tokens, fake_hub):
    meta = tokens.load_tokens(real_tokens).meta
    identity = meta["codec"]
    assert identity["model"] == MUSICGEN and identity["pretrained"] == "facebook/encodec_32khz"
    weights = fake_hub["snapshots"]["facebook/encodec_32khz"] / "model.safetensors"
    assert identity["pretrained_sha256"]["model.safetensors"] == sha256_file(weights)
    assert (meta["frame_rate"], meta["n_q"], meta["cardinality"]) == (50.0, 4, 2048)
    assert [c["frames"] for c in meta["clips"]] == [150] * 6


def test_word_dropout_of_the_t5_conditioner_follows_the_step_seed(real_tokens):
    lm = presets.load_lm(MUSICGEN).train()
    provider = lm.condition_provider
    from audiocraft.modules.conditioners import ConditioningAttributes

    def tokens_for(seed):
        import random

        random.seed(seed)
        attributes = [ConditioningAttributes(text={"description": DESCRIPTION})]
        return provider.tokenize(attributes)["description"]["input_ids"].tolist()

    seeds = [text_seed(0, step, 0) for step in range(8)]
    assert [tokens_for(s) for s in seeds] == [tokens_for(s) for s in seeds], "same step, same words"
    assert len({json.dumps(tokens_for(s)) for s in seeds}) > 1, "the words dropped change from step to step"
    batch = Batcher(tokens.load_tokens(real_tokens), REAL, lm.special_token_id).train_batch(3, 1)
    assert batch.text_seed == text_seed(REAL.seed, 3, 1)


def test_training_the_real_structure_is_deterministic_and_resumes_exactly(real_tokens, tmp_path, monkeypatch):
    """T5 word dropout included: two runs, and a run killed and resumed, give the same checkpoint."""
    a = run(tmp_path, real_tokens, name="a").status
    b = run(tmp_path, real_tokens, name="b").status
    assert a["status"] == "completed" and a["checkpoint_sha256"] == b["checkpoint_sha256"]
    assert a["best_step"] > 0 and a["best_val_loss"] < a["base_val_loss"]

    original = Batcher.train_batch

    def crash_at_step_4(self, step, micro):
        if step == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, step, micro)

    monkeypatch.setattr(Batcher, "train_batch", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, real_tokens, name="resumed")
    monkeypatch.setattr(Batcher, "train_batch", original)
    resumed = run(tmp_path, real_tokens, name="resumed").status
    assert resumed["checkpoint_sha256"] == a["checkpoint_sha256"]


def test_low_vram_trains_lora_on_the_cross_attention_too(real_tokens, tmp_path):
    from audiocraft.models import loaders

    settings = dataclasses.replace(REAL, low_vram=True, lora_lr=1e-2)
    status = run(tmp_path, real_tokens, settings, name="lora").status
    assert status["lr_setting"] == "train.lora_lr" and status["peak_lr"] == 1e-2
    assert status["best_val_loss"] < status["base_val_loss"]
    exported = torch.load(status["checkpoint"], weights_only=True)["best_state"]
    base = presets.load_lm_state(MUSICGEN)
    changed = {k for k in base if not torch.equal(exported[k].float(), base[k].float())}
    assert any("cross_attention" in k for k in changed) and any("self_attn" in k for k in changed)
    assert (
        loaders.load_lm_model(status["checkpoint"], device="cpu").cfg.conditioners.description.model == "t5"
    )
    # The sample rule's path on a LoRA-trained checkpoint, in this process (the workflow test below
    # runs LoRA through the shipped config's low_vram).
    clips = sorted(Path(real_tokens).parent.glob("clip_*.flac"))
    manifest = {"entries": [{"target": str(clips[1]), "split": "valid"}]}
    wavs = {kind: tmp_path / f"{kind}.wav" for kind in ("text", "continuation")}
    settings = SampleSettings(duration_s=1, prompt_s=0.5, device="cpu")
    generate_samples(
        status["checkpoint"], MUSICGEN, manifest, DESCRIPTION, settings, str(wavs["text"]),
        str(wavs["continuation"]), expect_sha256=status["checkpoint_sha256"],
    )  # fmt: skip
    for wav in wavs.values():
        audio, rate = sf.read(wav)
        assert rate == 32000 and len(audio) == pytest.approx(32000, abs=700)


# --- the workflow on the real model -------------------------------------------------------------


def real_job(workdir: Path) -> Path:
    """The real config (config/config.yaml: musicgen-small, its training defaults) on a short
    synthetic recording, trained for a few steps."""
    copy_workflow(workdir)
    cfg = yaml.safe_load((workdir / "config/config.yaml").read_text())
    assert cfg["model"]["name"] == MUSICGEN
    assert cfg["train"]["gradient_checkpointing"] is True and cfg["train"]["grad_accum"] == 2
    cfg["voices"] = {"nan": {"source": "data/demo/nan.flac", "description": DESCRIPTION}}
    cfg["demo"].update(duration_s=64, sample_rate=32000, channels=1)
    cfg["preflight"]["min_bytes"] = 100_000  # a synthetic voice compresses well
    cfg["train"].update(steps=4, batch_size=2, eval_every=2, log_every=1, segment_s=3, warmup_steps=1)
    cfg["sample"].update(duration_s=1, prompt_s=0.5)
    # Off here (the real model's base for evaluate is tested below, in this process): the rule
    # then only writes a voice_eval.json that says so.
    cfg["evaluate"]["enabled"] = False
    (workdir / "config/real.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


@pytest.mark.workflow
def test_the_real_config_runs_end_to_end_offline(tmp_path, fake_hub):
    """The shipped config as it is (LoRA through low_vram, the default for a free Drive) on the
    cache as the hub has it (the codec a pointer to facebook/encodec_32khz). The other cache form
    loads in test_fakehub.py; full fine-tuning of the real structure runs above, in this process."""
    workdir = real_job(tmp_path / "wf")
    proc = snakemake(workdir, "--configfile", "config/real.yaml", env=fake_hub["env"], check=False)
    fields = report_fields(workdir)
    assert proc.returncode == 0 and fields["objective_status"] == "completed", fields["root_cause"]
    status = json.loads(fields["training_status_json"])
    assert status["model"] == MUSICGEN and status["step"] == 4 and status["best_step"] > 0
    assert status["lr_setting"] == "train.lora_lr"
    identity = tokens.load_tokens(workdir / "results/tokens/nan.npz").meta["codec"]
    assert identity["pretrained"] == "facebook/encodec_32khz"
    for name in ("text.wav", "continuation.wav"):
        audio, rate = sf.read(workdir / "results/samples/nan" / name)
        assert rate == 32000 and len(audio) == pytest.approx(32000, abs=700)
    assert "LoRA rank 16" in (workdir / "results/logs/train/nan.log").read_text()
    evaluation = json.loads((workdir / "results/eval/nan/voice_eval.json").read_text())
    assert evaluation["status"] == "skipped" and "evaluate.enabled is false" in evaluation["note"]
    assert [fields[f"voice_similarity_{g}"] for g in ("finetuned", "base", "ceiling")] == ["N/A"] * 3


def test_the_gpu_rehearsal_script_runs_on_the_cpu(tmp_path, fake_hub, capsys):
    """bench/gpu_rehearsal.py, the real-structure rehearsal meant for a GPU, on the CPU with the tiny
    LM (in this process, on the session's fake cache: the same tiny dims the script writes):
    both modes (full fine-tuning with checkpointing and accumulation, low_vram) train, offline."""
    spec = importlib.util.spec_from_file_location("gpu_rehearsal", ROOT / "bench/gpu_rehearsal.py")
    rehearsal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearsal)
    rehearsal.main(
        [
            *("--dims", "tiny", "--steps", "2", "--device", "cpu", "--precisions", "auto"),
            *("--segment", "2", "--batch", "2", "--clips", "6", "--clip-s", "3"),
            *("--hub-cache", str(fake_hub["hf_home"]), "--workdir", str(tmp_path)),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(next(line for line in lines if '"bench": "gpu_rehearsal"' in line))
    assert [run.get("refused") for run in summary["runs"]] == [None, None]
    for run in summary["runs"]:
        assert math.isfinite(run["final_loss"]) and run["steps_per_s"] > 0, run
