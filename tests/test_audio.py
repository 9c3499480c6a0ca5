"""Streaming audio helpers: downmix and the background prefetcher."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voice_train.audio import FramePower, Series, downmix, prefetched, to_db


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


def test_series_grows_past_its_capacity_and_keeps_order():
    series = Series(capacity=3)
    chunks = [np.arange(i, i + 700, dtype=np.float64) for i in range(0, 2800, 700)]
    for chunk in chunks:
        series.extend(chunk)
    assert np.array_equal(series.values(), np.concatenate(chunks))


@pytest.mark.parametrize("expected", [0, 10_000, 1_000_000])
def test_frame_power_is_the_same_whatever_length_it_expected(expected):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal(n).astype(np.float32) for n in (997, 3001, 64, 5003)]
    power = FramePower(320, expected)
    for block in blocks:
        power.feed(block)
    whole = np.concatenate(blocks)
    n = whole.size // 320
    frames = whole[: n * 320].astype(np.float64).reshape(n, 320)
    tail = whole[n * 320 :].astype(np.float64)  # 69 samples: under half a hop, so not counted
    assert tail.size * 2 < 320
    np.testing.assert_allclose(power.result(), (frames**2).mean(axis=1), rtol=1e-6)


def test_to_db_takes_arrays_and_numbers_alike():
    values = np.array([1.0, 0.01, 0.0])
    assert np.array_equal(to_db(values), [0.0, -20.0, -120.0])
    assert to_db(0.01) == -20.0 and to_db(0.0) == -120.0
