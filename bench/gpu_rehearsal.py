"""The real job's training path on a GPU, offline: fp16 and bf16, full fine-tuning and low_vram.

Builds a Hugging Face cache holding ``facebook/musicgen-small`` of the real structure (T5
``t5-base`` conditioner, cross-attention, delay pattern, the codec as a pointer to
``facebook/encodec_32khz``) with random weights (``tests/fakehub.py``), sets ``HF_HUB_OFFLINE=1``
before anything reads it, encodes synthetic speech with that codec, and trains through
``voice_train.train.train`` exactly as the rule does, once per precision and mode. It prints one
JSON line per run (steps/s, tokens/s, peak GPU memory, losses, skipped fp16 steps) and a table.

    python bench/gpu_rehearsal.py                      # musicgen-small's LM dims, 20 steps each
    python bench/gpu_rehearsal.py --dims tiny --steps 8 --device cpu   # a quick check of the script

``--hub-cache DIR`` uses a fake cache written there before (by an earlier run with the same
``--dims``, or the test suite's) instead of writing a new one; the process must not have read
another cache first. ``--clips`` and ``--clip-s`` size the training data.

``--dims small`` is musicgen-small's LM (1024 wide, 24 layers, 16 heads: ~420 M parameters), so
memory and speed are the real job's; ``tiny`` is the test suite's model. Precisions the GPU cannot
run natively (bf16 below compute capability 8.0, e.g. a T4) are reported as refused: that is
the workflow's answer there too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests"), str(ROOT / "bench")]

from benchlib import machine, print_json  # noqa: E402


def make_tokens(out: Path, clips: int, seconds: float, device: str) -> str:
    import soundfile as sf

    from fakehub import MUSICGEN
    from voice_train import tokens
    from voice_train.demo import synthesize_voice
    from voice_train.fsutil import sha256_file

    audio = synthesize_voice(duration_s=clips * seconds, sample_rate=32000, channels=1, seed=3).audio
    audio, per, entries = audio.reshape(-1), int(seconds * 32000), []
    for i in range(clips):
        path = out / f"clip_{i:03d}.flac"
        sf.write(path, audio[i * per : (i + 1) * per], 32000)
        split = "valid" if i % 6 == 5 else "train"
        entries.append(
            {"target": str(path), "sha256": sha256_file(path), "duration_s": seconds, "split": split}
            | {"description": "a warm, unhurried older woman's voice telling a story"}
        )
    codes, offsets, meta = tokens.encode_manifest({"entries": entries}, MUSICGEN, device=device)
    path = out / "tokens.npz"
    tokens.write_tokens(path, codes, offsets, meta)
    return str(path)


def rehearse(tokens_path: str, out: Path, precision: str, low_vram: bool, args) -> dict:
    import torch

    from fakehub import MUSICGEN
    from voice_train.errors import VoiceTrainError
    from voice_train.train import TrainSettings, train

    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch,
        grad_accum=2,
        segment_s=args.segment,
        gradient_checkpointing=True,
        eval_every=args.steps,
        log_every=1,
        warmup_steps=2,
        precision=precision,
        low_vram=low_vram,
        device=args.device,
    )
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    name = f"{precision}-{'low_vram' if low_vram else 'full'}"
    result = {"run": name, "precision_setting": precision, "low_vram": low_vram}
    started = time.monotonic()
    try:
        status = train(
            tokens_path=tokens_path,
            model_name=MUSICGEN,
            settings=settings,
            checkpoint_path=str(out / name / "tts_voice_train_musicgen_small.pt"),
            status_path=str(out / name / "train_status.json"),
            state_dir=str(out / name / "state"),
            voice="rehearsal",
        ).status
    except VoiceTrainError as exc:
        return result | {"refused": str(exc)}
    history = json.loads((out / name / "state" / "loss_history.json").read_text())
    return result | {
        "precision": status["precision"],
        "seconds": round(time.monotonic() - started, 1),
        "steps_per_s": status["steps_per_s"],
        "tokens_per_s": status["tokens_per_s"],
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
        "first_loss": history["loss"][0][1] if history["loss"] else None,
        "final_loss": status["loss"],
        "base_val_loss": status["base_val_loss"],
        "best_val_loss": status["best_val_loss"],
        "skipped_steps": status["skipped_steps"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", choices=("small", "tiny"), default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--segment", type=float, default=10.0)
    parser.add_argument("--precisions", default="fp16,bf16,auto")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips", type=int, default=24, help="clips of synthetic speech to train on")
    parser.add_argument("--clip-s", type=float, default=12.0, help="seconds per clip")
    parser.add_argument("--hub-cache", type=Path, help="HF_HOME of a fake cache written before")
    parser.add_argument("--workdir", type=Path, help="where the tokens and runs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    hf_home = args.hub_cache or Path(tempfile.mkdtemp(prefix="gpu-rehearsal-hf-"))
    if "huggingface_hub" in sys.modules and os.environ.get("HF_HOME") != str(hf_home):
        parser.error(f"huggingface_hub already read the cache at {os.environ.get('HF_HOME')}, not {hf_home}")
    # Before anything imports huggingface_hub, which reads these once.
    os.environ.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    import torch

    from fakehub import TINY, build_fake_hub
    from voice_train import compat, presets

    compat.setup_audiocraft("torch")
    lm = TINY if args.dims == "tiny" else presets.RANDOM_PRESETS["musicgen-small-random"]
    started = time.monotonic()
    if args.hub_cache is None:
        build_fake_hub(hf_home, codec="pointer", lm=lm)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    tokens_path = make_tokens(work, clips=args.clips, seconds=args.clip_s, device=args.device)
    gpu = None
    if args.device.startswith("cuda"):
        gpu = {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0))}
    print_json({"setup_s": round(time.monotonic() - started, 1), "gpu": gpu, "torch": torch.__version__})
    results = []
    for precision in args.precisions.split(","):
        for low_vram in (False, True):
            results.append(rehearse(tokens_path, work, precision, low_vram, args))
            print_json(results[-1])
    print_json(
        {"bench": "gpu_rehearsal", "dims": args.dims, "gpu": gpu, "runs": results, "machine": machine()}
    )
    print(
        "\n| run | precision | steps/s | tokens/s | peak GPU GiB | loss first, last | val base, best | skip |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "refused" in r:
            print(f"| {r['run']} | refused: {r['refused']} | | | | | | |")
            continue
        cells = [r["run"], r["precision"], r["steps_per_s"], r["tokens_per_s"], r["peak_gpu_gib"]]
        cells += [
            f"{r['first_loss']}, {r['final_loss']}",
            f"{r['base_val_loss']:.3f}, {r['best_val_loss']:.3f}",
        ]
        print("| " + " | ".join(str(c) for c in [*cells, r["skipped_steps"]]) + " |")


if __name__ == "__main__":
    main()
