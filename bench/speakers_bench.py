"""How fast speaker screening runs (``voice_train.speakers.screen_speakers``), in × realtime.

    nice -n 19 .venv/bin/python bench/speakers_bench.py --minutes 5 --threads 2

Two kinds of speech from ``tests/noisy_speech.py``: an interview (one espeak-ng voice with
turns by two others) and read speech (one voice, its pauses as in reading aloud). Each is made
once (~80 s), resampled to prepare's 32 kHz and repeated to ``--minutes``; the voice activity
detector's speech frames come with it (not timed: prepare runs the detector anyway). The
encoder is loaded and warmed up first (timed apart); then ``screen_speakers`` runs on the
whole recording, reading it at 32 kHz as prepare would from its spool. The fastest of ``--repeats``
runs counts, with its wall time and its CPU time (all threads): on a shared machine the CPU
time says what the work costs. Every step but the voice search (capped at ``SEARCH_WINDOWS``)
is per window, so the hour is extrapolated linearly. Prints one JSON line per kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import noisy_speech as ns  # noqa: E402
from voice_train.speakers import FRAME_S, SpeakerSettings, load_encoder, screen_speakers  # noqa: E402
from voice_train.vad import frame_probabilities, window_probabilities  # noqa: E402

RATE = 32000


def material(kind: str, seconds: float) -> np.ndarray:
    """About ``seconds`` of the named kind of speech at 16 kHz."""
    if kind == "interview":
        return ns.interview(seconds, 16000, seed=1).speech.audio
    return ns.espeak_speech(seconds, 16000, seed=1, voices=("en-us+m3",)).audio


def speech_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    windows = window_probabilities(lambda a, b: audio[a:b], audio.size, rate, threads=2)
    return frame_probabilities(windows, int(audio.size / rate / FRAME_S), FRAME_S) >= 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest counts")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_encoder()
    load_s = time.perf_counter() - start
    for kind in ("interview", "read"):
        once = soxr.resample(material(kind, 90), 16000, RATE, quality="HQ").astype(np.float32)
        audio = np.tile(once, int(np.ceil(args.minutes * 60 * RATE / once.size)))
        speech = speech_frames(audio, RATE)
        read = lambda a, b, audio=audio: audio[a:b]  # noqa: E731
        screen_speakers(read, RATE, speech[:3000], SpeakerSettings(min_dominant_share=0), "warm-up")
        runs = []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            labels = screen_speakers(read, RATE, speech, SpeakerSettings(), kind)
            runs.append((time.perf_counter() - start, time.process_time() - cpu))
        seconds, cpu_s = min(runs)
        duration = audio.size / RATE
        windows = len(labels.windows)
        hour_s = 3600 * seconds / duration  # linear: every step is per window but the capped search
        print(
            json.dumps(
                {
                    "kind": kind,
                    "recording_s": round(duration, 1),
                    "speech_share": round(float(speech.mean()), 3),
                    "windows": windows,
                    "screen_s": round(seconds, 2),
                    "x_realtime": round(duration / seconds, 1),
                    "cpu_s": round(cpu_s, 2),
                    "x_realtime_per_cpu_s": round(duration / cpu_s, 1),
                    "ms_per_window": round(1000 * seconds / windows, 2),
                    "hour_estimate_s": round(hour_s, 1),
                    "encoder_load_s": round(load_s, 2),
                    "threads": args.threads,
                    "dominant_share": round(labels.dominant_share, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
