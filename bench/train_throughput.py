"""Training throughput and peak memory of a model preset on this machine.

    .venv/bin/python bench/train_throughput.py --preset tiny --batch 4 --segment 5 --steps 10
    .venv/bin/python bench/train_throughput.py --preset musicgen-small-random --batch 1 --segment 10 --steps 3
    .venv/bin/python bench/train_throughput.py --preset tiny --compile   # torch.compile the transformer

Builds the preset (random init, as the `model` rule does), encodes the demo clips with its own
codec (run `make demo` first), then times full optimizer steps (forward, the solver's
cross-entropy, backward, clipping, AdamW) after one warm-up step. Prints one JSON line.
The timed steps draw the same batches in every mode.

``--compile`` wraps the LM's transformer in ``torch.compile`` (inductor) and reports the
compile time apart: the first two steps, which trace forward and backward, are warm-up.
The code length is fixed by the segment, but the text condition's length changes with each
batch's descriptions, so torch may compile again (dynamic shapes) within the timed steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from voice_train import compat, presets, tokens  # noqa: E402
from voice_train.batches import Batcher  # noqa: E402
from voice_train.objective import lm_loss  # noqa: E402
from voice_train.trainer import TrainSettings  # noqa: E402


def compile_stats() -> dict:
    """How torch.compile fared: graphs made, graph breaks, recompilations (dynamo's counters)."""
    from torch._dynamo.utils import counters

    return {
        "graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "recompiles": sum(counters["recompiles"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny", choices=sorted(presets.RANDOM_PRESETS))
    parser.add_argument("--manifest", default="results/dataset/demo_voice/voice_dataset_manifest.json")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--segment", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the LM's transformer")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    compat.setup_audiocraft("torch")
    manifest = json.loads(Path(args.manifest).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / args.preset
        t0 = time.perf_counter()
        presets.build_random_pretrained(args.preset, model_dir, seed=0)
        build_s = time.perf_counter() - t0
        codes, offsets, meta = tokens.encode_manifest(manifest, str(model_dir), device=args.device)
        cache = tokens.TokenSet(codes, offsets, meta)
        lm = presets.load_lm(str(model_dir), device=args.device)
    settings = TrainSettings(batch_size=args.batch, segment_s=args.segment, cfg_dropout=0.1)
    batcher = Batcher(cache, settings, lm.special_token_id)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)
    lm.train()

    def no_autocast():
        return torch.autocast(device_type="cpu", enabled=False)

    def step(i: int) -> int:
        batch = batcher.train_batch(i, 0)
        c, m, d = batch.codes, batch.mask, batch.descriptions
        loss, _, counts = lm_loss(lm, c.to(args.device), m.to(args.device), d, no_autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        return int(c.shape[0] * c.shape[2] * c.shape[1])

    compile_s = None
    if args.compile:
        lm.transformer = torch.compile(lm.transformer)
    # Warm-up on batches of their own (allocations, optimizer state; with --compile the traces
    # and kernels), so that both modes time the same batches: steps 1..N.
    t0 = time.perf_counter()
    step(10_000)
    if args.compile:
        step(10_001)
        compile_s = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    n_tokens = sum(step(i) for i in range(1, args.steps + 1))
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "preset": args.preset,
                "parameters": sum(p.numel() for p in lm.parameters()),
                "batch": args.batch,
                "segment_s": args.segment,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "build_s": round(build_s, 1),
                "compiled": args.compile,
                "compile_s": compile_s,
                **(compile_stats() if args.compile else {}),
                "steps": args.steps,
                "s_per_step": round(elapsed / args.steps, 3),
                "steps_per_s": round(args.steps / elapsed, 3),
                "tokens_per_s": round(n_tokens / elapsed, 1),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
