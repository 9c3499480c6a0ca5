"""Does a model copy its training audio? The longest stretch of a piece's codes found in the token cache.

A fine-tune that replays what it was trained on scores well on every "sounds like her" measure;
this says whether it does. A frame is the tuple of its codebooks' codes (4 for musicgen-small);
the longest run of consecutive frames of a piece that also occurs, in the same order, inside one
training clip's codes is found by binary search on the run's length, with rolling hashes of the
runs (64-bit, modulo 2**64) in a set per length.
"""

from __future__ import annotations

import numpy as np

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2**64


def frame_keys(codes: np.ndarray, cardinality: int) -> np.ndarray:
    """One uint64 per frame of ``codes`` [K, T]: its K codes side by side (a hash of them when
    they do not fit in 64 bits)."""
    codes = np.asarray(codes, dtype=np.int64)
    bits = max(1, int(np.ceil(np.log2(max(2, cardinality)))))
    if bits * codes.shape[0] <= 63:
        keys = np.zeros(codes.shape[1], dtype=np.uint64)
        for k in range(codes.shape[0]):
            keys |= codes[k].astype(np.uint64) << np.uint64(bits * k)
        return keys
    keys = np.zeros(codes.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(codes.shape[0]):
            keys = keys * _BASE + codes[k].astype(np.uint64) + np.uint64(1)
    return keys


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B**i and B**-i modulo 2**64, for i < n."""
    inverse = np.uint64(pow(int(_BASE), -1, 1 << 64))
    powers, inverses = np.ones(n, dtype=np.uint64), np.ones(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(1, n):
            powers[i] = powers[i - 1] * _BASE
            inverses[i] = inverses[i - 1] * inverse
    return powers, inverses


def _window_hashes(keys: np.ndarray, length: int, powers: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The hash of every run of ``length`` consecutive keys, sum_j key[i+j] * B**j (mod 2**64):
    a difference of two prefix sums of key[t] * B**t, scaled back by B**-i."""
    n = keys.size
    if n < length:
        return np.zeros(0, dtype=np.uint64)
    up, down = powers
    with np.errstate(over="ignore"):
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(keys * up[:n], dtype=np.uint64)])
        starts = np.arange(n - length + 1)
        return (prefix[starts + length] - prefix[starts]) * down[starts]


def longest_shared_run(piece: np.ndarray, corpus: list[np.ndarray], cardinality: int) -> int:
    """Frames in the longest run of ``piece``'s codes [K, T] that also occurs in one of ``corpus``'s
    clips [K, Ti] (runs never cross from one clip into the next)."""
    query = frame_keys(piece, cardinality)
    clips = [frame_keys(c, cardinality) for c in corpus if c.shape[1] > 0]
    if query.size == 0 or not clips:
        return 0
    powers = _powers(max(query.size, max(c.size for c in clips)) + 1)

    def shared(length: int) -> bool:
        seen = set()
        for keys in clips:
            seen.update(_window_hashes(keys, length, powers).tolist())
        return any(h in seen for h in _window_hashes(query, length, powers).tolist())

    low, high = 0, min(query.size, max(c.size for c in clips))
    while low < high:  # the longest length that is shared (shared runs nest: a binary search)
        middle = (low + high + 1) // 2
        if shared(middle):
            low = middle
        else:
            high = middle - 1
    return low
