"""Speed and memory of the prepare step against the floor of just decoding the source.

    .venv/bin/python bench/prepare_bench.py                 # 60 min for speed, 10 vs 120 min for memory
    .venv/bin/python bench/prepare_bench.py --quick         # a 2-minute smoke version
    .venv/bin/python bench/prepare_bench.py --baseline-scripts /tmp/before/scripts   # also old code

Test recordings are made once and cached under ``--workdir``: a few minutes of synthetic voice
(``voice_train.demo.synthesize_voice``), tiled with a different shift and level per tile and
streamed to a 16-bit FLAC in blocks, so an hour costs seconds of synthesis and flat memory.
Each measurement runs in a fresh process (its own peak RSS), the runs are interleaved so that
machine load hits prepare and its baseline alike, and the figures are medians. Prints one JSON
line.

Measured in each round: ``decode`` (the floor: soundfile decoding the FLAC to float32 blocks);
``preflight`` (``voice_train.preflight.run_preflight``, what the rule before prepare runs);
``prepare_t<N>`` (``voice_train.prepare.prepare_dataset``, what the rule calls, after preflight
made its marker, with ``config/config.yaml``'s settings and N threads); ``prepare_before`` (the
same from another checkout's ``scripts/``, if given: the outputs must be the same bytes);
``encode`` (writing and hashing the clips prepare made, from memory, one thread: work prepare
does that the floor does not); ``stages`` (pass 1's parts timed one after another, and numpy's
mean over the channels, which the downmix was before); and the peak RSS of prepare on a short
and a long recording.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import benchlib

# Bump when the generated audio changes, so stale cached recordings are not reused.
RECORDING_VERSION = 1
BASE_S = 240.0  # seconds synthesised once; tiles of it make up the recording
WRITE_FRAMES = 1 << 18


def recording_path(workdir: Path, minutes: float, rate: int, channels: int) -> Path:
    return workdir / f"voice_{minutes:g}min_{rate}hz_{channels}ch_v{RECORDING_VERSION}.flac"


def make_recording(workdir: Path, minutes: float, rate: int, channels: int) -> tuple[Path, Path]:
    """The cached test recording and its preflight marker; made on first use."""
    import numpy as np
    import soundfile as sf

    from voice_train.demo import synthesize_voice
    from voice_train.fsutil import atomic_path, write_json_atomic
    from voice_train.preflight import PreflightSettings, run_preflight

    path = recording_path(workdir, minutes, rate, channels)
    marker = path.with_suffix(".preflight.json")
    if path.exists() and marker.exists():
        return path, marker
    base = synthesize_voice(min(BASE_S, minutes * 60), rate, channels, seed=0).audio
    total = int(round(minutes * 60 * rate))
    rng = np.random.default_rng(1)
    with atomic_path(path) as tmp, sf.SoundFile(str(tmp), "w", rate, channels, "PCM_16", format="FLAC") as fh:
        written = 0
        while written < total:
            # Each tile starts elsewhere in the base and has its own level, so no two are alike.
            tile = np.roll(base, -int(rng.integers(0, base.shape[0])), axis=0)
            tile = tile[: total - written] * np.float32(10 ** (-rng.uniform(0, 6) / 20))
            for start in range(0, tile.shape[0], WRITE_FRAMES):
                fh.write(tile[start : start + WRITE_FRAMES])
            written += tile.shape[0]
    # Preflight is not measured; its marker is prepare's input. The test file is small.
    write_json_atomic(marker, run_preflight(path, PreflightSettings(min_bytes=1, min_duration_s=30)))
    return path, marker


def prepare_settings():
    import yaml

    from voice_train.prepare import PrepareSettings
    from voice_train.segment import SegmentSettings

    config = yaml.safe_load((benchlib.ROOT / "config" / "config.yaml").read_text())
    # A baseline checkout gets the keys it knows (older ones lack the pause detector's and others).
    known = {*PrepareSettings.__dataclass_fields__, *SegmentSettings.__dataclass_fields__}
    return PrepareSettings.from_config({k: v for k, v in config["prepare"].items() if k in known})


def dataset_digest(out: Path) -> str:
    """sha256 over every file prepare wrote (relative names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(out)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# what one child process measures


def child_decode(args) -> dict:
    import soundfile as sf

    from voice_train.audio import BLOCK_FRAMES

    t0 = time.perf_counter()
    frames = 0
    with sf.SoundFile(str(args.source)) as fh:
        while block := fh.read(BLOCK_FRAMES, dtype="float32", always_2d=True).shape[0]:
            frames += block
    return {"wall_s": time.perf_counter() - t0, "frames": frames}


def child_preflight(args) -> dict:
    from voice_train.preflight import PreflightSettings, run_preflight

    t0 = time.perf_counter()
    marker = run_preflight(args.source, PreflightSettings(min_bytes=1, min_duration_s=30), threads=2)
    return {"wall_s": time.perf_counter() - t0, "snr_db": marker.get("snr_db")}


def child_prepare(args) -> dict:
    from voice_train.prepare import prepare_dataset

    marker = json.loads(Path(args.marker).read_text())
    settings = prepare_settings()
    threads = {} if args.child_threads is None else {"threads": args.child_threads}
    t0 = time.perf_counter()
    manifest = prepare_dataset(
        args.source, marker, "bench", "a benchmark voice", args.out, settings, **threads
    )
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "clips": manifest["count"], "digest": dataset_digest(Path(args.out))}


def child_encode(args) -> dict:
    """Write every clip of a prepared dataset as 16-bit FLAC and hash it, from memory."""
    import soundfile as sf

    from voice_train.fsutil import sha256_file

    manifest = json.loads((Path(args.out) / "voice_dataset_manifest.json").read_text())
    clips = [sf.read(e["target"], dtype="float32")[0] for e in manifest["entries"]]
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        t0 = time.perf_counter()
        for i, audio in enumerate(clips):
            path = Path(tmp) / f"{i:05d}.flac"
            sf.write(str(path), audio, manifest["sample_rate"], format="FLAC", subtype="PCM_16")
            sha256_file(path)
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "clips": len(clips),
        "clip_s": sum(c.size for c in clips) / manifest["sample_rate"],
    }


def child_stages(args) -> dict:
    """Prepare's passes, one stage after another, each timed (what a profile shows, in numbers):
    pass 1, then the voice activity detector over the spool on one thread."""
    import numpy as np
    import soundfile as sf

    from voice_train.audio import BLOCK_FRAMES, FramePower, downmix, resample_blocks
    from voice_train.filters import SpeechFilter
    from voice_train.loudness import LoudnessMeter
    from voice_train.prepare import FRAME_S
    from voice_train.vad import window_probabilities

    settings = prepare_settings()
    sr = settings.sample_rate
    stages = (
        "decode",
        "downmix",
        "downmix_numpy_mean",
        "resample",
        "speech_filter",
        "spool",
        "frame_power",
        "loudness",
        "vad",
    )
    times = dict.fromkeys(stages, 0.0)

    def timed(stage, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        times[stage] += time.perf_counter() - t0
        return out

    def blocks():
        with sf.SoundFile(str(args.source)) as fh:
            while (block := timed("decode", fh.read, BLOCK_FRAMES, "float32", True)).shape[0]:
                timed("downmix_numpy_mean", np.mean, block, 1, np.float32)  # what downmix did before
                yield timed("downmix", downmix, block)

    power, meter = FramePower(int(round(sr * FRAME_S))), LoudnessMeter(sr)
    speech_filter = SpeechFilter(sr, settings.highpass_hz)
    resampled = resample_blocks(blocks(), sf.info(str(args.source)).samplerate, sr)
    with tempfile.NamedTemporaryFile(dir=args.out.parent) as spool:
        samples = 0
        while (block := timed("resample", next, resampled, None)) is not None:
            block = timed("speech_filter", speech_filter, block)
            timed("spool", block.astype(np.float32, copy=False).tofile, spool)
            timed("frame_power", power.feed, block)
            timed("loudness", meter.feed, block)
            samples += block.size
        spool.flush()
        data = np.memmap(spool.name, dtype=np.float32, mode="r")
        timed("vad", window_probabilities, lambda a, b: np.array(data[a:b]), samples, sr)
    times["resample"] -= (
        times["decode"] + times["downmix"] + times["downmix_numpy_mean"]
    )  # it pulls the decoder
    return {f"{k}_s": v for k, v in times.items()}


CHILDREN = {
    "decode": child_decode,
    "preflight": child_preflight,
    "prepare": child_prepare,
    "encode": child_encode,
    "stages": child_stages,
}


# ---------------------------------------------------------------------------------------------
# the parent: make recordings, run children interleaved, summarise


def measure(kind: str, source: Path, marker: Path, out: Path, extra: list[str] | None = None) -> dict:
    if kind == "prepare":
        shutil.rmtree(out, ignore_errors=True)
    args = ["--child", kind, "--source", str(source), "--marker", str(marker), "--out", str(out)]
    return benchlib.run_child([__file__, *args, *(extra or [])])


def versions() -> dict:
    import numpy
    import scipy
    import soundfile
    import soxr

    return {
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "soxr": soxr.__version__,
        "libsoxr": getattr(soxr, "__libsoxr_version__", "unknown"),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voice-train-bench"))
    parser.add_argument("--minutes", type=float, default=60.0, help="recording length for the speed figures")
    parser.add_argument(
        "--rss-minutes", type=float, nargs=2, default=(10.0, 120.0), help="lengths for memory"
    )
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="prepare's thread counts")
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--baseline-scripts", type=Path, help="scripts/ of another checkout, measured too")
    parser.add_argument(
        "--quick", action="store_true", help="2 min for speed, 1 vs 3 min for memory, 2 rounds"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--scripts", type=Path, default=benchlib.SCRIPTS, help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--marker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(args.scripts))

    if args.child:
        result = CHILDREN[args.child](args)
        benchlib.print_json({**result, "peak_rss_mb": benchlib.peak_rss_mb()})
        return
    if args.quick:
        args.minutes, args.rss_minutes, args.runs = 2.0, (1.0, 3.0), 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = {"machine": benchlib.machine(), "versions": versions(), "command": sys.argv[1:]}
    t0 = time.perf_counter()
    lengths = sorted({args.minutes, *args.rss_minutes})
    recordings = {m: make_recording(args.workdir, m, args.rate, args.channels) for m in lengths}
    info["make_recordings_s"] = round(time.perf_counter() - t0, 1)
    for path, _ in recordings.values():
        path.read_bytes()  # into the page cache, so the first round is not the only cold one

    source, marker = recordings[args.minutes]
    out = args.workdir / "dataset"
    threads = max(args.threads)
    plan = [
        ("decode", "decode", source, marker, out, []),
        ("preflight", "preflight", source, marker, out, []),
    ]
    if args.baseline_scripts:
        plan.append(
            ("prepare_before", "prepare", source, marker, out, ["--scripts", str(args.baseline_scripts)])
        )
    for n in args.threads:
        plan.append((f"prepare_t{n}", "prepare", source, marker, out, ["--child-threads", str(n)]))
    plan += [("encode", "encode", source, marker, out, []), ("stages", "stages", source, marker, out, [])]
    for m in args.rss_minutes:
        plan.append(
            (
                f"rss_{m:g}min",
                "prepare",
                *recordings[m],
                args.workdir / "dataset_rss",
                ["--child-threads", str(threads)],
            )
        )
    runs: dict[str, list[dict]] = {}
    for _ in range(args.runs):
        for name, kind, src, mk, dest, extra in plan:
            runs.setdefault(name, []).append(measure(kind, src, mk, dest, extra))
            print(name, json.dumps(runs[name][-1]), file=sys.stderr, flush=True)

    def med(name: str, key: str = "wall_s") -> float:
        return benchlib.median([r[key] for r in runs[name]])

    audio_s = args.minutes * 60
    best = f"prepare_t{threads}"
    prepares = [n for n in runs if n.startswith("prepare")]
    digests = {n: sorted({r["digest"] for r in runs[n]}) for n in prepares}
    short, long = (f"rss_{m:g}min" for m in args.rss_minutes)
    results = {
        "recording": f"{args.minutes:g} min, {args.rate} Hz, {args.channels} ch, 16-bit FLAC",
        "rounds": args.runs,
        "clips": runs[best][0]["clips"],
        "decode": {
            "wall_s": med("decode"),
            "x_realtime": audio_s / med("decode"),
            "rss_mb": med("decode", "peak_rss_mb"),
        },
        **{
            n: {
                "wall_s": med(n),
                "x_realtime": audio_s / med(n),
                "rss_mb": med(n, "peak_rss_mb"),
                "over_decode": med(n) / med("decode"),
            }
            for n in prepares
        },
        "preflight": {
            "wall_s": med("preflight"),
            "x_realtime": audio_s / med("preflight"),
            "rss_mb": med("preflight", "peak_rss_mb"),
            "over_decode": med("preflight") / med("decode"),
        },
        "preflight_plus_prepare": {
            "wall_s": med("preflight") + med(best),
            "x_realtime": audio_s / (med("preflight") + med(best)),
            "over_decode": (med("preflight") + med(best)) / med("decode"),
        },
        "encode_clips_s": med("encode"),
        "clip_audio_s": runs["encode"][0]["clip_s"],
        "stages_s": {
            k: benchlib.median([r[k] for r in runs["stages"]]) for k in runs["stages"][0] if k.endswith("_s")
        },
        "outputs_identical": len({d for ds in digests.values() for d in ds}) == 1,
        "dataset_digest": digests[best],
        "rss_mb": {short: med(short, "peak_rss_mb"), long: med(long, "peak_rss_mb")},
        "rss_long_over_short": med(long, "peak_rss_mb") / med(short, "peak_rss_mb"),
    }
    if args.baseline_scripts:
        results["before_over_after"] = med("prepare_before") / med(best)
    info["load_avg_end"] = benchlib.load_average()
    benchlib.print_json({**info, **benchlib.rounded(results)})


if __name__ == "__main__":
    main()
