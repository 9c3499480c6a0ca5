"""Training memory of a MusicGen LM: an analytic model, checked against measured CPU peaks.

    .venv/bin/python bench/memory_model.py                # the table for musicgen-small on a T4
    .venv/bin/python bench/memory_model.py --measure      # + check the model against this CPU

The model counts the bytes that training holds at its peak: weights, gradients and AdamW's
two moments (full fine-tuning: all of them; LoRA: only the low-rank matrices), the
activations autograd keeps for the backward pass (every layer's, or with gradient
checkpointing only each layer's input plus one layer being recomputed), the logits and
their cross-entropy, the frozen T5 text encoder, and the CUDA context.

``--measure`` trains the musicgen-small-sized random LM (the real dimensions: 24 layers of
1024, 4 codebooks of 2048) on this CPU in float32 for a few steps per setting, each in a
fresh process, and compares the peak resident memory above the process's baseline with what
the model predicts for the same setting (float32, and the CPU attention, which keeps the
attention probabilities). The codes are drawn at random here: memory does not depend on
their values, and a batch of the demo's real codes would need the 420 M-parameter codec
built first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
T4_USABLE_GB = 15.0  # a 16 GB T4 as Colab reports it, less what the driver keeps


@dataclass(frozen=True)
class Dims:
    layers: int = 24
    dim: int = 1024
    heads: int = 16
    ffn: int = 4096
    codebooks: int = 4
    card: int = 2048
    text_encoder_params: int = 109_600_000  # t5-base's encoder (musicgen-small's conditioner)
    frame_rate: int = 50

    def lm_params(self) -> dict[str, int]:
        per_layer_targets = (
            3 * self.dim**2 + self.dim**2 + 3 * self.dim**2 + self.dim**2 + 2 * self.dim * self.ffn
        )
        targets = self.layers * per_layer_targets
        embeddings = self.codebooks * (self.card + 1) * self.dim
        heads = self.codebooks * self.dim * self.card
        norms = self.layers * 3 * 2 * self.dim + 2 * self.dim
        return {"targets": targets, "other": embeddings + heads + norms}

    def lora_params(self, rank: int) -> int:
        d, f = self.dim, self.ffn
        per_layer = rank * ((d + 3 * d) * 2 + (d + d) * 2 + (d + f) * 2)
        return self.layers * per_layer


def analytic(
    dims: Dims,
    batch: int,
    segment_s: float,
    act_bytes: int,
    checkpointing: bool,
    lora_rank: int = 0,
    half_base: bool = False,
    attention_probs: bool = False,
    gpu: bool = True,
) -> dict[str, float]:
    """Peak training memory in GB, by part."""
    p = dims.lm_params()
    total = p["targets"] + p["other"]
    tokens = batch * (int(segment_s * dims.frame_rate) + dims.codebooks - 1)  # + the delay pattern
    frames = tokens // batch
    if lora_rank:
        trainable = dims.lora_params(lora_rank)
        weights = (2 if half_base else 4) * p["targets"] + 4 * p["other"] + 4 * trainable
    else:
        trainable = total
        weights = 4 * total
    grads = 4 * trainable
    adam = 8 * trainable
    # Kept for backward, per token and layer (elements): norms 3 x 2D, q/k/v 3D, attention out
    # and its projection input 2D, cross-attention q, out and projection input 3D, the FFN's
    # hidden before and after GELU 2F; plus the softmax output where attention is not fused.
    per_token_layer = 6 * dims.dim + 3 * dims.dim + 2 * dims.dim + 3 * dims.dim + 2 * dims.ffn
    if attention_probs:
        per_token_layer += dims.heads * frames
    if checkpointing:
        activations = tokens * (dims.layers * dims.dim + per_token_layer) * act_bytes
    else:
        activations = tokens * dims.layers * per_token_layer * act_bytes
    # Under fp16/bf16 autocast each linear layer keeps a half-precision copy of its weight for
    # the backward pass (with LoRA: of the merged weight): all layers' without checkpointing.
    if act_bytes == 2:
        cast_copies = 2 * p["targets"] // (dims.layers if checkpointing else 1)
    else:
        cast_copies = 0
    # Logits (in the compute precision), their float32 copy for the loss, and its gradient.
    logits = batch * dims.codebooks * frames * dims.card * (act_bytes + 4 + 4)
    text_encoder = 4 * dims.text_encoder_params if gpu else 0
    context = 0.5 * GB if gpu else 0
    parts = {
        "weights": weights,
        "gradients": grads,
        "adamw": adam,
        "activations": activations,
        "autocast_weight_copies": cast_copies,
        "logits_and_loss": logits,
        "text_encoder": text_encoder,
        "cuda_context": context,
    }
    parts = {k: v / GB for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    parts["trainable_params"] = trainable
    return parts


T4_ROWS = [
    # (name, batch, segment, checkpointing, lora_rank, half_base)
    ("config.yaml default: full fine-tuning, fp16, checkpointing", 4, 10.0, True, 0, False),
    ("full fine-tuning, fp16, no checkpointing", 4, 10.0, False, 0, False),
    ("full fine-tuning, fp16, checkpointing, batch 8 x 30 s", 8, 30.0, True, 0, False),
    ("low_vram: LoRA r16, fp16 base, checkpointing", 4, 10.0, True, 16, True),
    ("low_vram: LoRA r16, batch 8 x 30 s", 8, 30.0, True, 16, True),
]


def t4_table(dims: Dims) -> list[dict]:
    rows = []
    for name, batch, seg, ckpt, rank, half in T4_ROWS:
        parts = analytic(dims, batch, seg, act_bytes=2, checkpointing=ckpt, lora_rank=rank, half_base=half)
        rows.append(
            {"setting": name, "batch": batch, "segment_s": seg, **{k: round(v, 2) for k, v in parts.items()}}
        )
    return rows


MEASURE = [
    # (batch, segment_s, checkpointing, lora_rank)
    (1, 10.0, False, 0),
    (1, 10.0, True, 0),
    (2, 10.0, False, 0),
    (2, 10.0, True, 16),
]

_CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {scripts!r})
from voice_train import compat, lora, presets
from voice_train.objective import lm_loss
compat.setup_audiocraft("torch")
from audiocraft.models import builders
from omegaconf import OmegaConf
torch.set_num_threads(2)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def hwm():  # this process's own peak (ru_maxrss would include the parent's at fork)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
base = rss()
cfg = OmegaConf.create(presets.lm_config(presets.RANDOM_PRESETS["musicgen-small-random"]))
torch.manual_seed(0)
lm = builders.get_lm_model(cfg).float()
built = rss()
if {ckpt}:
    lm.transformer.checkpointing = "torch"
params = lora.add_lora(lm, {rank}, 16.0, 0) if {rank} else list(lm.parameters())
opt = torch.optim.AdamW(params, lr=1e-5)
lm.train()
frames = int({seg} * 50)
g = torch.Generator().manual_seed(0)
for step in range(2):
    codes = torch.randint(0, 2048, ({batch}, 4, frames), generator=g)
    mask = torch.ones_like(codes, dtype=torch.bool)
    loss, _, _ = lm_loss(lm, codes, mask, ["a voice"] * {batch}, lambda: torch.autocast("cpu", enabled=False))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if step == 0:  # before AdamW allocates its moments: weights, gradients and activations
        backward_peak = hwm()
    opt.step()
peak = hwm()
print(json.dumps({{
    "weights_gb": (built - base) / 1e9,
    "backward_peak_above_base_gb": (backward_peak - base) / 1e9,
    "peak_above_base_gb": (peak - base) / 1e9,
}}))
"""


def measure(dims: Dims) -> list[dict]:
    rows = []
    for batch, seg, ckpt, rank in MEASURE:
        code = _CHILD.format(scripts=str(ROOT / "scripts"), ckpt=ckpt, rank=rank, seg=seg, batch=batch)
        # A fixed mmap threshold makes glibc return every freed large block to the system at
        # once, so resident memory follows what is live (by default freed temporaries stay
        # cached in the heap and the peak overstates LoRA's memory by ~2x).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        model = analytic(
            dims, batch, seg, act_bytes=4, checkpointing=ckpt, lora_rank=rank, attention_probs=True, gpu=False
        )
        rows.append(
            {
                "batch": batch,
                "segment_s": seg,
                "checkpointing": ckpt,
                "lora_rank": rank,
                "measured_weights_gb": round(got["weights_gb"], 2),
                "model_weights_gb": round(model["weights"], 2),
                "measured_backward_peak_gb": round(got["backward_peak_above_base_gb"], 2),
                "model_backward_peak_gb": round(model["total"] - model["adamw"], 2),
                "measured_peak_gb": round(got["peak_above_base_gb"], 2),
                "model_peak_gb": round(model["total"], 2),
                "ratio_backward": round(
                    got["backward_peak_above_base_gb"] / (model["total"] - model["adamw"]), 2
                ),
                "ratio": round(got["peak_above_base_gb"] / model["total"], 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="check the model against this CPU (~5 min)")
    args = parser.parse_args()
    dims = Dims()
    p = dims.lm_params()
    print(json.dumps({"lm_params": p["targets"] + p["other"], "lora_r16_params": dims.lora_params(16)}))
    for row in t4_table(dims):
        fits = "fits" if row["total"] <= T4_USABLE_GB else "does NOT fit"
        print(json.dumps({**row, "t4_15gb": fits}))
    if args.measure:
        measure(dims)
    print(
        json.dumps({"peak_rss_gb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})
    )


if __name__ == "__main__":
    main()
