"""Disk space of a training run: the peak bytes under the work directory, and the bytes each save writes.

The real job keeps its work on Google Drive, whose free quota is 15 GB. This runs a few training
steps of a preset on the CPU (``musicgen-small-random`` has musicgen-small's dimensions, so its
files have the real sizes) while a watcher thread sums the sizes of every file under the work
directory every 20 ms. The model itself is built outside the work directory: on Colab the hub
model sits in the Hugging Face cache on the runtime's local disk, not on Drive.

    .venv/bin/python bench/drive_space.py --preset musicgen-small-random            # full fine-tuning
    .venv/bin/python bench/drive_space.py --preset musicgen-small-random --low-vram # LoRA

``--code DIR`` runs another checkout's ``scripts/`` (e.g. a ``git worktree`` of an older commit)
through the same measurement, to compare.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import SCRIPTS, machine, print_json  # noqa: E402


def tree_bytes(root: Path) -> tuple[int, list[tuple[str, int]]]:
    """Apparent size of every file under ``root`` (what a quota counts), and the files.

    A hard link counts once per name, as on Google Drive, which has no links (a copy there)."""
    files = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            try:
                files.append((str(path.relative_to(root)), path.stat().st_size))
            except FileNotFoundError:  # removed while we looked
                continue
    return sum(size for _, size in files), files


class Watcher(threading.Thread):
    """Samples the work directory's size until stopped; keeps the peak and what made it."""

    def __init__(self, root: Path, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.peak, self.peak_files, self.samples = 0, [], 0
        self.stop = threading.Event()

    def look(self) -> None:
        total, files = tree_bytes(self.root)
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_files = total, files

    def run(self) -> None:
        while not self.stop.is_set():
            self.look()
            time.sleep(self.every_s)


def process_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def record_writes(module, name: str, saves: list, watcher: Watcher) -> None:
    """Wrap ``module.name`` (a save function taking (obj, path)) to log what each call wrote."""
    original = getattr(module, name)

    def recording(obj, path, *args, **kwargs):
        watcher.look()
        before = process_write_bytes()
        started = time.monotonic()
        original(obj, path, *args, **kwargs)
        watcher.look()
        saves.append(
            {
                "file": Path(path).name,
                "kind": obj.get("kind", "state") if isinstance(obj, dict) else "?",
                "file_bytes": Path(path).stat().st_size,
                "written_bytes": process_write_bytes() - before,
                "seconds": round(time.monotonic() - started, 2),
            }
        )

    setattr(module, name, recording)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="musicgen-small-random")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--low-vram", action="store_true")
    parser.add_argument("--model-dir", help="where the preset is built (reused if there); default: temp")
    parser.add_argument("--code", help="another checkout's root, whose scripts/ to run instead of ours")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.code, "scripts") if args.code else SCRIPTS))

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

    work = scratch / "work"  # the Drive folder: results/ of one voice
    work.mkdir()
    watcher = Watcher(work)
    saves: list = []
    for module_name, name in (
        ("voice_train.train_state", "save_in_place"),
        ("voice_train.export", "save_torch_atomic"),
        ("voice_train.train", "save_torch_atomic"),  # older checkouts save everything through it
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:  # an older checkout
            continue
        if hasattr(module, name):
            record_writes(module, name, saves, watcher)
    settings = train_module.TrainSettings(
        steps=args.steps,
        batch_size=1,
        grad_accum=1,
        segment_s=2,
        eval_every=2,
        save_every=2,
        log_every=1,
        warmup_steps=1,
        low_vram=args.low_vram,
        precision="fp32",
        device="cpu",
    )
    shutil.copy2(tokens_path, work / "tokens.npz")  # the token cache lives in the work dir too
    kwargs = dict(
        tokens_path=str(work / "tokens.npz"),
        model_name=str(model_dir),
        settings=settings,
        checkpoint_path=str(work / "checkpoints/v/tts_voice_train_musicgen_small.pt"),
        status_path=str(work / "train/v/train_status.json"),
        state_dir=str(work / "state/v"),
        voice="v",
    )
    if "export_dir" in inspect.signature(train_module.train).parameters:
        kwargs["export_dir"] = str(work / "checkpoints/v/export")
    watcher.start()
    started = time.monotonic()
    train_module.train(**kwargs)
    watcher.stop.set()
    watcher.join()
    watcher.look()
    final, files = tree_bytes(work)
    print_json(
        {
            "bench": "drive_space",
            "preset": args.preset,
            "low_vram": args.low_vram,
            "steps": args.steps,
            "code": args.code or "this checkout",
            "seconds": round(time.monotonic() - started, 1),
            "peak_bytes": watcher.peak,
            "peak_files": sorted(watcher.peak_files),
            "final_bytes": final,
            "final_files": sorted(files),
            "saves": saves,
            "samples": watcher.samples,
            "machine": machine(),
        }
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
