"""LoRA for audiocraft's LM: low-rank updates on the transformer's weight matrices.

Each target weight ``W`` (the attention input and output projections, self and cross, and
the two feed-forward matrices of every layer) is reparametrised as ``W + (alpha / r) * B @ A``
with ``torch.nn.utils.parametrize``, so audiocraft's own forward code (which reads
``in_proj_weight`` directly) sees the updated weight without any change. ``A`` starts
small and random from a fixed seed, ``B`` at zero: before the first update the model is
exactly the base model. Only ``A`` and ``B`` train, so the optimizer holds two small
matrices per weight instead of two copies of the model.

The export merges the update into the base weights read from the base checkpoint, in
float32: the result is a plain audiocraft LM checkpoint with the base model's keys.
"""

from __future__ import annotations

import math

# Weight matrices that get a low-rank update, by their name inside a transformer layer.
TARGETS = (
    "self_attn.in_proj_weight",
    "self_attn.out_proj.weight",
    "cross_attention.in_proj_weight",
    "cross_attention.out_proj.weight",
    "linear1.weight",
    "linear2.weight",
)


def _lora_module():
    import torch
    from torch import nn

    class LoRAUpdate(nn.Module):
        """The parametrization ``W -> W + scale * B @ A`` (A: r x in, B: out x r)."""

        def __init__(self, out_features: int, in_features: int, rank: int, scale: float, generator) -> None:
            super().__init__()
            bound = 1.0 / math.sqrt(in_features)
            a = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
            self.A = nn.Parameter(a)
            self.B = nn.Parameter(torch.zeros(out_features, rank))
            self.scale = scale

        def forward(self, weight):
            delta = (self.B @ self.A) * self.scale
            return weight + delta.to(weight.dtype)

    return LoRAUpdate


def target_weights(lm):
    """``(state-dict key, module, parameter name)`` of every target weight, in layer order."""
    found = []
    for index, layer in enumerate(lm.transformer.layers):
        for target in TARGETS:
            owner_path, _, param = target.rpartition(".")
            owner = layer
            for part in owner_path.split("."):
                owner = getattr(owner, part, None)
                if owner is None:
                    break
            if owner is None or not hasattr(owner, param):
                continue  # e.g. no cross-attention in a model with prepend conditioning
            found.append((f"transformer.layers.{index}.{target}", owner, param))
    return found


def add_lora(lm, rank: int, alpha: float, seed: int) -> list:
    """Freeze ``lm`` and give each target weight a trainable low-rank update; return its params."""
    import torch
    from torch.nn.utils import parametrize

    lora_update = _lora_module()
    for param in lm.parameters():
        param.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    trainable = []
    for _, module, name in target_weights(lm):
        weight = getattr(module, name)
        update = lora_update(weight.shape[0], weight.shape[1], rank, alpha / rank, generator)
        update.to(device=weight.device)
        parametrize.register_parametrization(module, name, update)
        trainable += [update.A, update.B]
    return trainable


def has_lora(lm) -> bool:
    from torch.nn.utils import parametrize

    return any(parametrize.is_parametrized(module, name) for _, module, name in target_weights(lm))


def lora_state(lm) -> dict:
    """The low-rank matrices only (a few MB), keyed by target weight: for resume states."""
    state = {}
    for key, module, name in target_weights(lm):
        update = module.parametrizations[name][0]
        state[f"{key}.A"] = update.A.detach().to("cpu", copy=True)
        state[f"{key}.B"] = update.B.detach().to("cpu", copy=True)
    return state


def load_lora_state(lm, state: dict) -> None:
    """Put saved low-rank matrices back into ``lm`` (which must have the same LoRA layout)."""
    import torch

    with torch.no_grad():
        for key, module, name in target_weights(lm):
            update = module.parametrizations[name][0]
            update.A.copy_(state[f"{key}.A"])
            update.B.copy_(state[f"{key}.B"])


def freeze_base(lm, dtype) -> None:
    """Keep the frozen base weights of the targets in ``dtype`` (GPU low-VRAM mode: the autocast
    dtype, so that they meet activations of their own dtype)."""
    for _, module, name in target_weights(lm):
        original = module.parametrizations[name].original
        original.data = original.data.to(dtype)


def merged_state(base_state: dict, lm, update: dict) -> dict:
    """``base_state`` (the base LM's own state dict) with each target weight plus its update.

    Computed in float32 from the base checkpoint's weights, not from the (possibly float16)
    weights held during training, so the export loses nothing of the base model.
    """
    import torch

    merged = dict(base_state)
    for key, module, name in target_weights(lm):
        scale = module.parametrizations[name][0].scale
        a, b = update[f"{key}.A"].float(), update[f"{key}.B"].float()
        merged[key] = (base_state[key].float() + (b @ a) * scale).to(base_state[key].dtype)
    assert set(merged) == set(base_state)
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in merged.items()}
