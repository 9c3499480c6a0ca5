"""Safe loading and no network: what the code itself promises, checked on its source and at run time."""

from __future__ import annotations

import ast
import re
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "scripts").rglob("*.py"))


def calls(name: str):
    """Every call of ``<something>.<name>(...)`` in our sources, with its file and line."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                yield path.relative_to(ROOT), node


def test_every_torch_load_is_weights_only():
    found = list(calls("load"))
    torch_loads = [
        (p, n) for p, n in found if isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"
    ]
    assert torch_loads, "the check sees our torch.load calls"
    for path, node in torch_loads:
        kw = {k.arg: k.value for k in node.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, (
            f"{path}:{node.lineno}: torch.load without weights_only=True"
        )


def test_no_shell_commands_in_the_rules():
    """Rules run Python scripts only; a shell: directive would need every path quoted ({input:q})."""
    directive = re.compile(r"^\s+(shell|run):", flags=re.MULTILINE)
    for rule_file in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]:
        found = directive.search(rule_file.read_text(encoding="utf-8"))
        assert found is None, f"{rule_file.name}: {found and found.group(0).strip()}"


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return attempts


def test_a_local_model_trains_and_samples_without_the_network(no_network, tmp_path):
    """The tiny preset, built, encoded, trained and sampled with every socket connect refused."""
    import dataclasses

    import numpy as np
    import soundfile as sf

    from voice_train import compat, presets, tokens
    from voice_train.demo import synthesize_voice
    from voice_train.fsutil import sha256_file
    from voice_train.sample import SampleSettings, generate_samples
    from voice_train.train import TrainSettings, train

    compat.setup_audiocraft("torch")  # the xformers stand-in, as every model rule does first
    model = tmp_path / "tiny"
    presets.build_random_pretrained("tiny", model, seed=0)
    voice = synthesize_voice(duration_s=12, sample_rate=32000, channels=1, seed=5).audio[:, 0]
    entries = []
    for i, split in enumerate(("train", "train", "valid")):
        clip = tmp_path / f"c{i}.flac"
        sf.write(clip, voice[i * 128000 : (i + 1) * 128000], 32000)
        entries.append(
            {
                "target": str(clip),
                "sha256": sha256_file(clip),
                "duration_s": 4.0,
                "split": split,
                "sample_rate": 32000,
                "description": "a voice",
            }
        )
    manifest = {"entries": entries}
    codes, offsets, meta = tokens.encode_manifest(manifest, str(model))
    tokens.write_tokens(tmp_path / "tokens.npz", codes, offsets, meta)
    settings = dataclasses.replace(
        TrainSettings(), steps=2, batch_size=2, grad_accum=1, eval_every=2, save_every=2, log_every=1,
        segment_s=2, precision="fp32", gradient_checkpointing=False, device="cpu", warmup_steps=1,
    )  # fmt: skip
    result = train(
        tokens_path=str(tmp_path / "tokens.npz"),
        model_name=str(model),
        settings=settings,
        checkpoint_path=str(tmp_path / "ckpt" / "tts_voice_train_musicgen_small.pt"),
        status_path=str(tmp_path / "train_status.json"),
        state_dir=str(tmp_path / "state"),
        voice="v",
    )
    generate_samples(
        checkpoint=result.checkpoint,
        base_model=str(model),
        manifest=manifest,
        description="a voice",
        settings=dataclasses.replace(SampleSettings(), duration_s=0.5, prompt_s=0.25, device="cpu"),
        text_wav=str(tmp_path / "text.wav"),
        continuation_wav=str(tmp_path / "cont.wav"),
        expect_sha256=result.status["checkpoint_sha256"],
    )
    assert result.status["status"] == "completed" and np.isfinite(result.status["loss"])
    assert no_network == [], "no connection was attempted"
