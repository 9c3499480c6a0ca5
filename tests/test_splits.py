"""train / valid / test by time (``voice_train.splits``): blocks of the recording, a guard between
splits, at least one clip each where the clips allow it. The spans are made up here (clips of 4-8 s
with pauses of 0.3-2 s, drawn from a seeded generator), as prepare gives them."""

from __future__ import annotations

import numpy as np
import pytest

from voice_train.splits import assign_splits


def clips(n: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    spans, at = [], 0.0
    for _ in range(n):
        length = float(rng.uniform(4, 8))
        spans.append((at, at + length))
        at += length + float(rng.uniform(0.3, 2.0))
    return spans


def runs(splits: list) -> list[tuple[str, int]]:
    """Consecutive clips of the same split, as (split, count), leaving out guard drops."""
    out: list[tuple[str, int]] = []
    for name in splits:
        if name is None:
            continue
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + 1)
        else:
            out.append((name, 1))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_hour_is_split_in_blocks_of_the_recording_not_single_clips(seed):
    spans = clips(600, seed)  # about an hour
    result = assign_splits(spans, 0.1, 0.1, seed=seed, guard_s=1.0)
    seconds = {
        s: sum(e - b for (b, e), n in zip(spans, result.splits) if n == s) for s in ("train", "valid", "test")
    }
    total = sum(seconds.values())
    assert 0.08 <= seconds["valid"] / total <= 0.12 and 0.08 <= seconds["test"] / total <= 0.12
    held_out_runs = [count for name, count in runs(result.splits) if name != "train"]
    assert len(held_out_runs) <= 14 and min(held_out_runs) >= 5, "blocks of several clips, not clips alone"
    # spread over the recording: a held-out block in each half
    where = [b for (b, _), n in zip(spans, result.splits) if n in ("valid", "test")]
    assert min(where) < spans[-1][1] / 2 < max(where)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_clip_of_one_split_touches_one_of_another(seed):
    spans = clips(200, seed)
    result = assign_splits(spans, 0.1, 0.1, seed=seed, guard_s=1.0)
    kept = [(span, name) for span, name in zip(spans, result.splits) if name is not None]
    for (first, a), (second, b) in zip(kept, kept[1:]):
        if a != b:
            assert second[0] - first[1] >= 1.0, (first, a, second, b)
    dropped = [name for name in result.splits if name is None]
    assert dropped, "with pauses under a second some clips must give way"


def test_the_split_is_deterministic_and_the_seed_moves_the_blocks():
    spans = clips(120)
    first = assign_splits(spans, 0.1, 0.1, seed=0, guard_s=1.0).splits
    assert assign_splits(spans, 0.1, 0.1, seed=0, guard_s=1.0).splits == first
    assert assign_splits(spans, 0.1, 0.1, seed=1, guard_s=1.0).splits != first


@pytest.mark.parametrize("n", [1, 2, 3, 5, 18])
def test_every_split_gets_a_clip_where_the_recording_allows_and_says_so_where_not(n):
    result = assign_splits(clips(n), 0.1, 0.1, seed=0, guard_s=1.0)
    names = set(result.splits) - {None}
    assert "train" in names
    assert ("valid" in names) == (n >= 2) and ("test" in names) == (n >= 3)
    if n < 3:
        assert any("no test clip" in note for note in result.notes)
    if n < 2:
        assert any("no validation clip" in note for note in result.notes)


def test_fractions_of_zero_hold_nothing_out():
    result = assign_splits(clips(50), 0.0, 0.0, seed=0, guard_s=1.0)
    assert set(result.splits) == {"train"} and result.notes == []
