"""train / valid / test as contiguous blocks of the recording, with a guard between them.

A clip held out on its own is usually the sentence right after a training clip: same minute, same
room, same microphone, often the same words carried on, so it says little about how the model
does on speech it never heard. Here the held-out splits are blocks of consecutive clips
(``BLOCK_S`` of speech each, fewer and shorter on a short recording), spread over the recording by
a seeded draw, one block per stretch of it, so that a change of room or microphone half-way is
held out too. Where two clips of different splits are less than ``guard_s`` apart in the
recording, one of them is left out of the dataset (a training clip first), so no clip of one split
touches one of another. valid chooses the export; test is touched only by rule evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "valid", "test")
BLOCK_S = 60.0  # seconds of clips in a held-out block of a long recording


@dataclass(frozen=True)
class SplitResult:
    splits: list[str | None]  # per clip: train / valid / test, or None (left out by the guard)
    notes: list[str]  # plain lines: what the recording did not allow


def _blocks(total: float, share: float) -> int:
    return 0 if share <= 0 else max(1, int(round(total * share / BLOCK_S)))


def assign_splits(
    spans: list[tuple[float, float]], valid_fraction: float, test_fraction: float, seed: int, guard_s: float
) -> SplitResult:
    """Splits for clips at ``spans`` (start, end seconds in the recording, in time order).

    About ``valid_fraction`` and ``test_fraction`` of the clips' seconds go to each held-out
    split, as blocks of consecutive clips; each gets at least one clip where the clips allow it
    (a valid clip from two clips on, a test clip from three), and a note says when they do not.
    Deterministic for the same spans and ``seed``."""
    n = len(spans)
    notes: list[str] = []
    if n == 0:
        return SplitResult([], notes)
    durations = np.array([end - start for start, end in spans], dtype=float)
    ends = np.cumsum(durations)
    centres = ends - durations / 2  # each clip's middle, on the axis of clip seconds
    total = float(ends[-1])
    wanted = {"valid": valid_fraction if n >= 2 else 0.0, "test": test_fraction if n >= 3 else 0.0}
    if valid_fraction > 0 and n < 2:
        notes.append(f"only {n} clip: no validation clip (the last step is exported)")
    if test_fraction > 0 and n < 3:
        notes.append(f"only {n} clips: no test clip, so evaluate scores the validation clips instead")
    labels = [s for s in ("valid", "test") for _ in range(_blocks(total, wanted[s]))]
    rng = np.random.default_rng([seed, n])
    rng.shuffle(labels)
    splits: list[str | None] = ["train"] * n
    stretch = total / max(1, len(labels))
    for i, label in enumerate(labels):  # one block in each stretch, at a seeded place within it
        length = min(stretch, total * wanted[label] / labels.count(label))
        start = i * stretch + rng.uniform(0.0, stretch - length)
        inside = np.flatnonzero((centres >= start) & (centres < start + length))
        if inside.size == 0:  # a block shorter than a clip: the clip nearest its middle
            inside = np.array([int(np.argmin(np.abs(centres - (start + length / 2))))])
        for j in inside:
            splits[j] = label
    for label in ("valid", "test"):  # never take the last training clip
        if wanted[label] > 0 and label not in splits and splits.count("train") > 1:
            j = max((k for k in range(n) if splits[k] == "train"), key=lambda k: durations[k])
            splits[j] = label
    if "train" not in splits:
        splits[int(np.argmax(durations))] = "train"
    _guard(spans, splits, guard_s, notes)
    return SplitResult(splits, notes)


def _guard(
    spans: list[tuple[float, float]], splits: list[str | None], guard_s: float, notes: list[str]
) -> None:
    """Leave out one of two neighbouring clips of different splits closer than ``guard_s``: the
    training one (else the validation one), unless that empties its split."""
    left_out = 0
    for i in range(len(spans) - 1):
        a, b = splits[i], splits[i + 1]
        if a is None or b is None or a == b or spans[i + 1][0] - spans[i][1] >= guard_s:
            continue
        pick = i if a == "train" else i + 1 if b == "train" else i if a == "valid" else i + 1
        if splits.count(splits[pick]) > 1:
            splits[pick] = None
            left_out += 1
    if left_out == 0 and any(
        splits[i] and splits[i + 1] and splits[i] != splits[i + 1] and spans[i + 1][0] - spans[i][1] < guard_s
        for i in range(len(spans) - 1)
    ):
        notes.append("too few clips to keep a guard between the splits: some clips of different splits touch")
