"""The training objective: audiocraft's MusicGen solver loss, and the validation loss.

The clip's codes are laid out in the LM's delay pattern, the LM predicts every codebook at every
step, and cross-entropy is taken per codebook over the valid positions (the pattern's validity
mask AND the padding mask), then averaged over codebooks. The clip's description is the text
condition.
"""

from __future__ import annotations

import random


def condition_tensors(lm, descriptions: list[str | None], text_seed: int | None = None):
    """The LM's condition tensors for these descriptions (None: no text, as CFG dropout leaves it).

    ``text_seed`` seeds Python's global `random` first: audiocraft's T5 conditioner draws its
    word dropout from it in training mode.
    """
    from audiocraft.modules.conditioners import ConditioningAttributes

    if text_seed is not None:
        random.seed(text_seed)
    attributes = [ConditioningAttributes(text={"description": d}) for d in descriptions]
    tokenized = lm.condition_provider.tokenize(attributes)
    return lm.condition_provider(tokenized)


def cross_entropy(logits, targets, mask):
    """Per-codebook CE over valid positions (as audiocraft's MusicGen solver), averaged over codebooks.

    Returns (loss, per-codebook sums, per-codebook counts); sums and counts are detached.
    """
    import torch
    import torch.nn.functional as F

    n_q = targets.shape[1]
    loss = torch.zeros((), device=targets.device)
    sums, counts = [], []
    for k in range(n_q):
        m = mask[:, k].reshape(-1)
        lk = logits[:, k].reshape(-1, logits.shape[-1])[m].float()
        tk = targets[:, k].reshape(-1)[m]
        ce_sum = F.cross_entropy(lk, tk, reduction="sum")
        count = m.sum()
        loss = loss + ce_sum / count.clamp(min=1)
        sums.append(ce_sum.detach())
        counts.append(count)
    return loss / n_q, torch.stack(sums), torch.stack(counts)


def lm_loss(lm, codes, pad_mask, descriptions, autocast, text_seed: int | None = None):
    """Forward pass and loss of one batch; ``autocast`` is a callable giving the precision context."""
    with autocast():
        tensors = condition_tensors(lm, descriptions, text_seed)
        out = lm.compute_predictions(codes, [], tensors)
    return cross_entropy(out.logits, codes, pad_mask & out.mask)


def evaluate(lm, batcher, device: str, autocast) -> float | None:
    """Mean validation cross-entropy (token-weighted per codebook, averaged over codebooks);
    None when there are no validation clips."""
    import torch

    if not batcher.valid_ids:
        return None
    was_training = lm.training
    lm.eval()
    total_sum, total_count = None, None
    with torch.no_grad():
        for batch in batcher.valid_batches():
            _, sums, counts = lm_loss(
                lm, batch.codes.to(device), batch.mask.to(device), batch.descriptions, autocast
            )
            total_sum = sums if total_sum is None else total_sum + sums
            total_count = counts if total_count is None else total_count + counts
    lm.train(was_training)
    return float((total_sum / total_count.clamp(min=1)).mean().item())
