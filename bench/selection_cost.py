"""What choosing the export by sound costs: one selection scoring against training steps, on the CPU.

``train.select_by: voice`` scores the LM at each validation (``voice_train.selection``: continue
the first 2 s of two validation clips for 3 s, embed, compare). This times that scoring and the
real config's training step (batch 4 x 10 s, grad_accum 2, gradient checkpointing; full or
``--low-vram``) of a preset (``musicgen-small-random`` has musicgen-small's dimensions), and gives
the share of training time it adds at ``--eval-every``: scoring / (eval_every x step + scoring).

    .venv/bin/python bench/selection_cost.py --model-dir /tmp/msr --low-vram
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import SCRIPTS, machine, print_json  # noqa: E402

sys.path.insert(0, str(SCRIPTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="musicgen-small-random")
    parser.add_argument("--model-dir", help="where the preset is built (reused if there)")
    parser.add_argument("--low-vram", action="store_true")
    parser.add_argument("--steps", type=int, default=2, help="training steps timed (after one warm-up)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from drive_space import make_tokens  # the same synthetic clips, encoded by the preset's codec

    from voice_train import compat, presets
    from voice_train.trainer import Run, TrainSettings

    torch.set_num_threads(args.threads)
    compat.setup_audiocraft("torch")
    scratch = Path(tempfile.mkdtemp(prefix="selection-cost-"))
    model_dir = Path(args.model_dir or scratch / "models") / args.preset
    if not model_dir.exists():
        presets.build_random_pretrained(args.preset, model_dir, seed=0)
    tokens_path = make_tokens(str(model_dir), scratch, clips=8, seconds=10.0)
    settings = TrainSettings(
        steps=100, batch_size=4, grad_accum=2, segment_s=10, gradient_checkpointing=True,
        low_vram=args.low_vram, precision="fp32", device="cpu", select_by="voice",
    )  # fmt: skip
    run = Run(tokens_path, str(model_dir), settings, "torch")
    run.start_selection()
    run.lm.train()
    run.train_step(0)  # warm-up
    started = time.monotonic()
    for step in range(1, args.steps + 1):
        run.train_step(step)
    step_s = (time.monotonic() - started) / args.steps
    run.selection.score(0)  # warm-up (the speaker encoder, the first generation)
    started = time.monotonic()
    score = run.selection.score(1)
    scoring_s = time.monotonic() - started
    share = scoring_s / (args.eval_every * step_s + scoring_s)
    print_json(
        {
            "bench": "selection_cost",
            "preset": args.preset,
            "low_vram": args.low_vram,
            "threads": args.threads,
            "train_step_s": round(step_s, 2),
            "selection_scoring_s": round(scoring_s, 2),
            "score": score,
            "eval_every": args.eval_every,
            "share_of_training": round(share, 4),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
