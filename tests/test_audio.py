"""Streaming audio helpers: downmix and the background prefetcher."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voice_train.audio import downmix, prefetched


@pytest.mark.parametrize("channels", range(2, 10))
def test_downmix_is_numpys_mean_to_the_bit(channels):
    rng = np.random.default_rng(channels)
    block = (rng.standard_normal((5000, channels)) * 0.3).astype(np.float32)
    block[::7] = 0.0
    block[1::11] = -0.0
    assert downmix(block).tobytes() == block.mean(axis=1, dtype=np.float32).tobytes()


def test_prefetched_yields_everything_in_order():
    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))


def test_prefetched_raises_the_producers_error():
    def items():
        yield 1
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(prefetched(items()))


def test_prefetched_stops_its_thread_when_left_early():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.set()

    stream = prefetched(endless(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert closed.is_set()
    assert not any(t.name == "prefetch" for t in threading.enumerate())
