"""Space and bytes of a training run on a Drive-like mount: peak quota used, bytes uploaded, time per save.

The real job keeps its work on Google Drive (15 GB free), where a deleted or replaced file stays
in the bin and a changed file keeps its earlier revision, both counted in the quota for up to 30
days. This trains a preset on the CPU (``musicgen-small-random`` has musicgen-small's dimensions,
so every file has the real size) with its state dir, token cache and checkpoint on the mount of
``tests/drive/drivefs.py`` (FUSE; ``tests/drive/setup_fuse.sh`` installs it as root), which counts
live, bin and revision bytes and every upload. The model is built outside the mount, as the Hugging
Face cache is on Colab's local disk. It then projects the measured sizes onto a real run.

    .venv/bin/python bench/drive_space.py --model-dir /tmp/msr                  # full fine-tuning
    .venv/bin/python bench/drive_space.py --model-dir /tmp/msr --low-vram       # LoRA
    .venv/bin/python bench/drive_space.py --preset tiny --steps 6               # a quick check
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, SCRIPTS, machine, print_json  # noqa: E402

sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(ROOT / "tests" / "drive"))


def record_saves(saves: list, drive) -> None:
    """Log each file the run saves (resume points, weights, finished state, checkpoint)."""
    from voice_train import export, train_state

    for module in (train_state, export):
        original = module.write_save

        def recording(obj, path, *args, _original=original, **kwargs):
            before = drive.stats()["uploaded"]
            started = time.monotonic()
            size = _original(obj, path, *args, **kwargs)
            saves.append(
                {
                    "file": Path(path).name,
                    "bytes": size,
                    "seconds": round(time.monotonic() - started, 2),
                    "uploaded": drive.stats()["uploaded"] - before,
                }
            )
            return size

        module.write_save = recording


def make_tokens(model_dir: str, out: Path, clips: int = 8, seconds: float = 4.0) -> str:
    import soundfile as sf

    from voice_train import tokens
    from voice_train.demo import synthesize_voice
    from voice_train.fsutil import sha256_file

    audio = synthesize_voice(duration_s=clips * seconds, sample_rate=32000, channels=1, seed=3).audio
    audio = audio.reshape(-1)
    entries = []
    per = int(seconds * 32000)
    for i in range(clips):
        path = out / f"clip_{i:03d}.flac"
        sf.write(path, audio[i * per : (i + 1) * per], 32000)
        split = "valid" if i in (2, 5) else "train"
        entries.append(
            {"target": str(path), "sha256": sha256_file(path), "duration_s": seconds, "split": split}
            | {"description": "a calm synthetic test voice"}
        )
    codes, offsets, meta = tokens.encode_manifest({"entries": entries}, model_dir)
    path = out / "tokens.npz"
    tokens.write_tokens(path, codes, offsets, meta)
    return str(path)


def projection(saves: list, steps: int, save_every: int, eval_every: int) -> dict:
    """What a real run of ``steps`` uploads, and so holds in Drive's quota for 30 days: every
    resume point, each best step's weights file (from none, when the best is always a save step,
    to one per save), the finished weights and the checkpoint."""
    size = {
        kind: max((s["bytes"] for s in saves if s["file"].startswith(kind)), default=0)
        for kind in ("resume", "weights", "tts")
    }
    resume_points = (steps - 1) // save_every
    base = resume_points * size["resume"] + size["weights"] + size["tts"]
    return {
        "steps": steps,
        "save_every": save_every,
        "eval_every": eval_every,
        "resume_points": resume_points,
        "resume_bytes": size["resume"],
        "weights_bytes": size["weights"],
        "checkpoint_bytes": size["tts"],
        "uploaded_min": base,
        "uploaded_max": base + resume_points * size["weights"],
        "state_only_min": base - size["tts"],
        "state_only_max": base - size["tts"] + resume_points * size["weights"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="musicgen-small-random")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument(
        "--eval-every", type=int, default=3, help="3 with save-every 2: bests between saves too"
    )
    parser.add_argument("--low-vram", action="store_true")
    parser.add_argument("--model-dir", help="where the preset is built (reused if there); default: temp")
    parser.add_argument("--write-mb-s", type=float, default=None, help="slow the mount's writes to this rate")
    parser.add_argument("--quota-gb", type=float, default=15.0, help="the Drive's quota (15: a free one)")
    parser.add_argument(
        "--project", nargs=3, type=int, default=[1500, 100, 100], metavar=("STEPS", "SAVE", "EVAL")
    )
    args = parser.parse_args()

    from mount import drive_mount

    from voice_train import compat, presets
    from voice_train import train as train_module

    compat.setup_audiocraft("torch")
    scratch = Path(tempfile.mkdtemp(prefix="drive-space-"))
    model_dir = Path(args.model_dir or scratch / "models") / args.preset
    if not model_dir.exists():
        presets.build_random_pretrained(args.preset, model_dir, seed=0)
    data = scratch / "data"
    data.mkdir()
    tokens_path = make_tokens(str(model_dir), data)
    settings = train_module.TrainSettings(
        steps=args.steps,
        batch_size=1,
        grad_accum=1,
        segment_s=2,
        eval_every=args.eval_every,
        save_every=args.save_every,
        log_every=1,
        warmup_steps=1,
        low_vram=args.low_vram,
        precision="fp32",
        device="cpu",
    )
    with drive_mount(scratch / "drive", quota=int(args.quota_gb * 1e9), write_mb_s=args.write_mb_s) as drive:
        work = drive.mount / "voice-train"  # the Drive folder: results/ of one voice
        work.mkdir()
        shutil.copy2(tokens_path, work / "tokens.npz")  # the token cache lives on Drive too
        saves: list = []
        record_saves(saves, drive)
        started = time.monotonic()
        train_module.train(
            tokens_path=str(work / "tokens.npz"),
            model_name=str(model_dir),
            settings=settings,
            checkpoint_path=str(work / "checkpoints/v/tts_voice_train_musicgen_small.pt"),
            status_path=str(work / "train/v/train_status.json"),
            state_dir=str(work / "state/v"),
            voice="v",
        )
        seconds = time.monotonic() - started
        stats = drive.stats()
        final_files = sorted(
            (str(p.relative_to(work)), p.stat().st_size) for p in work.rglob("*") if p.is_file()
        )
    steps, save_every, eval_every = args.project
    print_json(
        {
            "bench": "drive_space",
            "preset": args.preset,
            "low_vram": args.low_vram,
            "steps": args.steps,
            "save_every": args.save_every,
            "eval_every": args.eval_every,
            "write_mb_s": args.write_mb_s,
            "quota_gb": args.quota_gb,
            "seconds": round(seconds, 1),
            "mount": stats,
            "saves": saves,
            "final_files": final_files,
            "projection": projection(saves, steps, save_every, eval_every),
            "machine": machine(),
        }
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
