"""Training data path: steps/s fed from the int16 token cache vs re-encoding audio every step.

    .venv/bin/python bench/data_path_bench.py                # tiny preset, batch 4, 5 s segments
    .venv/bin/python bench/data_path_bench.py --quick        # a smoke version (a few steps)

Both paths do the same model work per step (``voice_train.train.lm_loss``, backward, gradient
clipping, AdamW) on the same model, batch size and segment length:

* ``cached``: batches from the token cache, as training does (``voice_train.train.Batcher``:
  random crops of each clip's int16 codes);
* ``reencode``: what audiocraft's MusicGen solver does instead: read a random audio crop of
  each clip from its FLAC and encode the batch with the compression model, every step.

The clips come from ``--minutes`` of synthetic voice run through preflight and prepare (cached
under ``--workdir``); the model is the preset built from seed 0. Rounds of ``--steps`` steps
alternate between the two paths (after warm-up steps of each), and the figures are medians over
rounds. The data share is the part of a step spent outside the model's forward, backward and
update: making the batch (and, for ``reencode``, reading and encoding the audio). Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import benchlib

sys.path.insert(0, str(benchlib.SCRIPTS))


def make_dataset(workdir: Path, minutes: float) -> dict:
    """Synthetic voice through preflight and prepare (config/config.yaml's settings); cached."""
    from prepare_bench import make_recording, prepare_settings

    from voice_train.prepare import prepare_dataset

    out = workdir / f"data_path_{minutes:g}min"
    manifest_path = out / "voice_dataset_manifest.json"
    if not manifest_path.exists():
        source, marker = make_recording(workdir, minutes, 44100, 2)
        marker = json.loads(marker.read_text())
        prepare_dataset(source, marker, "bench", "a benchmark voice", out, prepare_settings(), threads=2)
    return json.loads(manifest_path.read_text())


class AudioBatcher:
    """Batches as audiocraft's solver makes them: audio crops read from disk, then encoded."""

    def __init__(self, manifest: dict, train_ids: list[int], codec, settings, special: int) -> None:
        self.entries = manifest["entries"]
        self.train_ids = train_ids
        self.codec = codec
        self.settings = settings
        self.special = special
        self.sample_rate = codec.sample_rate
        self.hop = int(round(codec.sample_rate / codec.frame_rate))
        self.segment_frames = max(1, int(round(settings.segment_s * codec.frame_rate)))
        self.segment_samples = self.segment_frames * self.hop

    def train_batch(self, step: int):
        import numpy as np
        import soundfile as sf
        import torch

        rng = np.random.default_rng([self.settings.seed, step, 3])
        picks = [self.train_ids[i] for i in rng.integers(0, len(self.train_ids), self.settings.batch_size)]
        audio = np.zeros((len(picks), 1, self.segment_samples), dtype=np.float32)
        frames = []
        for row, clip in enumerate(picks):
            entry = self.entries[clip]
            length = sf.info(entry["target"]).frames
            extra = length - self.segment_samples
            start = int(rng.integers(0, extra + 1)) if extra > 0 else 0
            crop, _ = sf.read(entry["target"], start=start, frames=self.segment_samples, dtype="float32")
            audio[row, 0, : crop.shape[0]] = crop
            frames.append(-(-crop.shape[0] // self.hop))
        with torch.no_grad():
            codes, _ = self.codec.encode(torch.from_numpy(audio))
        longest = max(frames)
        codes = codes[:, :, :longest].long()
        mask = torch.zeros_like(codes, dtype=torch.bool)
        for row, n in enumerate(frames):
            mask[row, :, :n] = True
            codes[row, :, n:] = self.special
        dropped = rng.random(len(picks)) < self.settings.cfg_dropout
        descriptions = [None if d else self.entries[c]["description"] for c, d in zip(picks, dropped)]
        return codes, mask, descriptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voice-train-bench"))
    parser.add_argument("--preset", default="tiny", help="a random-init preset (voice_train.presets)")
    parser.add_argument("--minutes", type=float, default=5.0, help="synthetic voice to cut into clips")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--segment", type=float, default=5.0, help="seconds per training crop")
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each path, interleaved")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each path first")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default); 1 keeps the figures steady on a shared machine",
    )
    parser.add_argument("--quick", action="store_true", help="1 minute of voice, 3 steps, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.steps, args.rounds, args.warmup = 1.0, 3, 2, 1

    import torch

    from voice_train import compat, presets, tokens
    from voice_train.batches import Batcher
    from voice_train.objective import lm_loss
    from voice_train.trainer import TrainSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    info = {"machine": benchlib.machine(), "command": sys.argv[1:], "torch": torch.__version__}
    compat.setup_audiocraft("torch")
    args.workdir.mkdir(parents=True, exist_ok=True)
    manifest = make_dataset(args.workdir, args.minutes)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / args.preset)
        presets.build_random_pretrained(args.preset, model_dir, seed=0)
        cache = tokens.TokenSet(*tokens.encode_manifest(manifest, model_dir))
        lm = presets.load_lm(model_dir)
        codec = presets.load_compression(model_dir)
    codec.eval()
    settings = TrainSettings(batch_size=args.batch, segment_s=args.segment, cfg_dropout=0.1, seed=0)
    cached = Batcher(cache, settings, lm.special_token_id)
    reencode = AudioBatcher(manifest, cached.train_ids, codec, settings, lm.special_token_id)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)
    lm.train()

    def cached_batch(step: int):
        batch = cached.train_batch(step, 0)
        return batch.codes, batch.mask, batch.descriptions

    batch_of = {"cached": cached_batch, "reencode": reencode.train_batch}

    def no_autocast():
        return torch.autocast(device_type="cpu", enabled=False)

    def step(path: str, i: int) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        codes, mask, descriptions = batch_of[path](i)
        t1 = time.perf_counter()
        loss, _, _ = lm_loss(lm, codes, mask, descriptions, no_autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        return t1 - t0, time.perf_counter() - t1, codes.numel()

    counter = 0
    for path in batch_of:
        for _ in range(args.warmup):
            step(path, counter)
            counter += 1
    rounds: dict[str, list[dict]] = {path: [] for path in batch_of}
    for _ in range(args.rounds):
        for path in batch_of:
            timings = [step(path, counter + i) for i in range(args.steps)]
            counter += args.steps
            data, model = sum(t[0] for t in timings), sum(t[1] for t in timings)
            rounds[path].append(
                {
                    "steps_per_s": args.steps / (data + model),
                    "data_share": data / (data + model),
                    "data_ms_per_step": 1000 * data / args.steps,
                    "model_ms_per_step": 1000 * model / args.steps,
                    "tokens_per_step": sum(t[2] for t in timings) / args.steps,
                }
            )

    results = {
        path: {key: benchlib.median([r[key] for r in rs]) for key in rs[0]} for path, rs in rounds.items()
    }
    info.update(
        preset=args.preset,
        parameters=sum(p.numel() for p in lm.parameters()),
        clips=len(manifest["entries"]),
        train_clips=len(cached.train_ids),
        batch=args.batch,
        segment_s=args.segment,
        threads=torch.get_num_threads(),
        steps_per_round=args.steps,
        rounds=args.rounds,
        load_avg_end=benchlib.load_average(),
    )
    ratio = results["cached"]["steps_per_s"] / results["reencode"]["steps_per_s"]
    benchlib.print_json(benchlib.rounded({**info, **results, "cached_over_reencode": ratio, "raw": rounds}))


if __name__ == "__main__":
    main()
