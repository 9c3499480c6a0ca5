"""The training stage on the tiny preset: stand-in, learning, export, reload, determinism, resume."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voice_train import compat, presets, tokens
from voice_train.demo import synthesize_voice
from voice_train.errors import VoiceTrainError
from voice_train.fsutil import sha256_file
from voice_train.train import Batcher, TrainSettings, lm_loss, load_state, train

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


def run(tmp: Path, tiny: str, token_file: str, settings: TrainSettings = FAST, name: str = "run"):
    out = tmp / name
    return train(
        tokens_path=token_file,
        model_name=tiny,
        settings=settings,
        checkpoint_path=str(out / "ckpt" / "tts_voice_train_musicgen_small.pt"),
        export_dir=str(out / "ckpt" / "export"),
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
    cache = tokens.load_tokens(token_file)
    trained = presets.load_lm(status["export_dir"])
    untrained = presets.load_lm(tiny)
    codes, mask, descriptions = Batcher(cache, settings, trained.special_token_id).train_batch(0, 0)
    with torch.no_grad():
        losses = [
            float(lm_loss(m.eval(), codes, mask, descriptions, _no_autocast)[0]) for m in (trained, untrained)
        ]
    assert losses[0] < losses[1] - 2.0


def status_history(run_dir: Path) -> list[float]:
    import json

    history = json.loads((run_dir / "state" / "loss_history.json").read_text())
    return [loss for _, loss in history["loss"]]


def _no_autocast():
    return torch.autocast(device_type="cpu", enabled=False)


def test_checkpoint_reloads_with_identical_logits(tiny, token_file, tmp_path):
    from audiocraft.models import MusicGen, loaders

    result = run(tmp_path, tiny, token_file)
    ckpt = result.checkpoint
    export = result.status["export_dir"]
    pkg = torch.load(ckpt, map_location="cpu", weights_only=True)  # safe load, xp.cfg is YAML text
    assert isinstance(pkg["xp.cfg"], str) and pkg["exported"] is True
    a = loaders.load_lm_model(ckpt, device="cpu")
    b = MusicGen.get_pretrained(export, device="cpu").lm
    assert Path(export, "state_dict.bin").stat().st_ino == Path(ckpt).stat().st_ino  # linked, not copied
    cache = tokens.load_tokens(token_file)
    codes, mask, descriptions = Batcher(cache, FAST, a.special_token_id).train_batch(0, 0)
    with torch.no_grad():
        from voice_train.train import condition_tensors

        la = a.compute_predictions(codes, [], condition_tensors(a, descriptions)).logits
        lb = b.compute_predictions(codes, [], condition_tensors(b, descriptions)).logits
    assert torch.isfinite(la).any()
    torch.testing.assert_close(la, lb, rtol=0, atol=0, equal_nan=True)  # NaN: positions outside the pattern


def test_generation_returns_the_requested_length_and_rate(tiny, token_file, tmp_path):
    from voice_train.sample import SampleSettings, generate_samples

    result = run(tmp_path, tiny, token_file)
    clip = tokens.load_tokens(token_file).clips[2]
    info = generate_samples(
        export_dir=result.status["export_dir"],
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


def test_two_runs_give_the_same_checkpoint(tiny, token_file, tmp_path):
    a = run(tmp_path, tiny, token_file, name="a")
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


def test_an_interrupted_run_resumes_to_the_same_checkpoint(tiny, token_file, tmp_path, monkeypatch):
    whole = run(tmp_path, tiny, token_file, name="whole")

    undo = crash_at_step_9(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, name="resumed")
    state, why = load_state(
        tmp_path / "resumed" / "state" / "train_state.pt", expect=_fingerprint_of(tmp_path)
    )
    assert state is not None and state["step"] == 8, why  # saved every 4 steps
    undo()
    resumed = run(tmp_path, tiny, token_file, name="resumed")
    assert resumed.status["checkpoint_sha256"] == whole.status["checkpoint_sha256"]


def _fingerprint_of(tmp_path: Path) -> str:
    state = torch.load(tmp_path / "resumed" / "state" / "train_state.pt", weights_only=True)
    return state["fingerprint"]


def test_state_from_other_settings_is_not_resumed(tiny, token_file, tmp_path, caplog):
    run(tmp_path, tiny, token_file, name="x")
    changed = dataclasses.replace(FAST, lr=1e-3)
    with caplog.at_level("INFO"):
        run(tmp_path, tiny, token_file, changed, name="x")
    assert "starting clean: saved training state is for other settings or data" in caplog.text


def test_a_corrupt_training_state_is_not_used(tiny, token_file, tmp_path, caplog):
    run(tmp_path, tiny, token_file, name="y")
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


def test_light_modules_do_not_import_torch():
    code = (
        "import sys; sys.path.insert(0, 'scripts');"
        "import voice_train.report, voice_train.prepare, voice_train.preflight, voice_train.presets,"
        " voice_train.train, voice_train.tokens;"
        "assert 'torch' not in sys.modules and 'audiocraft' not in sys.modules, 'torch imported'"
    )
    import subprocess

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


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


def test_samples_refuse_an_export_that_is_not_the_recorded_checkpoint(tmp_path):
    from voice_train.sample import verify_export

    (tmp_path / "state_dict.bin").write_bytes(b"truncated checkpoint")
    with pytest.raises(VoiceTrainError, match="not the checkpoint that train_status.json recorded"):
        verify_export(str(tmp_path), expect_sha256="0" * 64)
    verify_export(str(tmp_path), expect_sha256=sha256_file(tmp_path / "state_dict.bin"))


# --- LoRA and low_vram ---------------------------------------------------------------------

LORA = dataclasses.replace(FAST, lora_rank=4, lora_alpha=8.0, lr=1e-2)


def _logits(lm, codes, descriptions):
    from voice_train.train import condition_tensors

    with torch.no_grad():
        return lm.eval().compute_predictions(codes, [], condition_tensors(lm, descriptions)).logits


def test_lora_starts_as_the_base_model_and_trains_only_its_matrices(tiny, token_file):
    from voice_train import lora

    lm = presets.load_lm(tiny)
    codes, _, descriptions = Batcher(tokens.load_tokens(token_file), FAST, lm.special_token_id).train_batch(
        0, 0
    )
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
    best = torch.load(tmp_path / "lora" / "state" / "best_state.pt", weights_only=True)["state"]
    lora.load_lora_state(with_lora, best)
    codes, _, descriptions = Batcher(
        tokens.load_tokens(token_file), FAST, merged.special_token_id
    ).train_batch(0, 0)
    torch.testing.assert_close(
        _logits(merged, codes, descriptions), _logits(with_lora, codes, descriptions), equal_nan=True
    )


def test_lora_resume_state_is_small_and_resumes_to_the_same_checkpoint(
    tiny, token_file, tmp_path, monkeypatch
):
    whole = run(tmp_path, tiny, token_file, LORA, name="whole")
    undo = crash_at_step_9(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, token_file, LORA, name="resumed")
    undo()
    resumed = run(tmp_path, tiny, token_file, LORA, name="resumed")
    assert resumed.status["checkpoint_sha256"] == whole.status["checkpoint_sha256"]

    full = run(tmp_path, tiny, token_file, name="full")
    lora_state = (tmp_path / "resumed" / "state" / "train_state.pt").stat().st_size
    full_state = (Path(full.status["export_dir"]).parents[1] / "state" / "train_state.pt").stat().st_size
    assert lora_state < 0.5 * full_state


def test_low_vram_switches_on_lora_and_checkpointing():
    plain = TrainSettings()
    assert plain.effective() == plain
    low = dataclasses.replace(plain, low_vram=True).effective()
    assert low.lora_rank == 16 and low.gradient_checkpointing is True
    assert dataclasses.replace(plain, low_vram=True, lora_rank=8).effective().lora_rank == 8
