"""Training and validation batches from the token cache, deterministic from (seed, step, micro-batch)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import VoiceTrainError
from .tokens import TokenSet


@dataclass
class Batch:
    codes: object  # torch.LongTensor [B, K, T]; padding holds the LM's special token
    mask: object  # torch.BoolTensor [B, K, T]: True where the codes are real
    descriptions: list  # the text condition per clip; None where classifier-free guidance dropped it
    text_seed: int | None = None  # seeds the text conditioner's word dropout (Python's `random`)


def text_seed(seed: int, step: int, micro: int) -> int:
    """A seed for Python's global `random` before tokenizing a training batch's text.

    audiocraft's T5 conditioner drops words with `random.random()` in training mode; seeding it
    per (seed, step, micro-batch) keeps a run and a resumed run identical on the real model.
    """
    digest = hashlib.sha256(f"text:{seed}:{step}:{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Batcher:
    """Turns the token cache into padded LM batches."""

    def __init__(self, tokens: TokenSet, settings, special_token: int) -> None:
        self.tokens = tokens
        self.seed = settings.seed
        self.batch_size = settings.batch_size
        self.cfg_dropout = settings.cfg_dropout or 0.0  # None here: the caller did not resolve it (Run does)
        self.special = special_token
        self.train_ids = tokens.indices("train")
        self.valid_ids = tokens.indices("valid")
        if not self.train_ids:
            raise VoiceTrainError(
                "token cache", "has no training clips", "record more audio or lower prepare.valid_fraction"
            )
        self.segment = max(1, int(round(settings.segment_s * tokens.meta["frame_rate"])))
        self.samples_per_step = settings.batch_size * settings.grad_accum

    def epoch_of(self, step: int) -> float:
        return step * self.samples_per_step / len(self.train_ids)

    def _permutation(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch, 1])
        return [self.train_ids[i] for i in rng.permutation(len(self.train_ids))]

    def train_batch(self, step: int, micro: int) -> Batch:
        """Clip codes (cropped at random to the segment length), padding mask and descriptions.

        Classifier-free-guidance dropout as audiocraft's MusicGen solver does it: one draw per
        (micro-)batch, and when it hits, the whole batch trains without its text.
        """
        n = len(self.train_ids)
        first = step * self.samples_per_step + micro * self.batch_size
        rng = np.random.default_rng([self.seed, step, micro, 2])
        picks, perms = [], {}
        for position in range(first, first + self.batch_size):
            epoch, index = divmod(position, n)
            if epoch not in perms:
                perms[epoch] = self._permutation(epoch)
            picks.append(perms[epoch][index])
        crops = []
        for clip in picks:
            codes = self.tokens.clip_codes(clip)
            extra = codes.shape[1] - self.segment
            start = int(rng.integers(0, extra + 1)) if extra > 0 else 0
            crops.append(codes[:, start : start + self.segment])
        drop_text = rng.random() < self.cfg_dropout
        descriptions = [None if drop_text else self.tokens.clips[c]["description"] for c in picks]
        codes, mask = self._pad(crops)
        return Batch(codes, mask, descriptions, text_seed(self.seed, step, micro))

    def valid_batches(self):
        """The whole validation split (each clip from its start, up to one segment), in batches."""
        ids = self.valid_ids
        for i in range(0, len(ids), self.batch_size):
            chunk = ids[i : i + self.batch_size]
            crops = [self.tokens.clip_codes(c)[:, : self.segment] for c in chunk]
            codes, mask = self._pad(crops)
            yield Batch(codes, mask, [self.tokens.clips[c]["description"] for c in chunk])

    def _pad(self, crops: list[np.ndarray]):
        import torch

        n_q = crops[0].shape[0]
        longest = max(c.shape[1] for c in crops)
        codes = torch.full((len(crops), n_q, longest), self.special, dtype=torch.long)
        mask = torch.zeros((len(crops), n_q, longest), dtype=torch.bool)
        for row, c in enumerate(crops):
            codes[row, :, : c.shape[1]] = torch.from_numpy(c.astype(np.int64))
            mask[row, :, : c.shape[1]] = True
        return codes, mask
