"""Where prepare cuts, on speech recorded as people record it: noise, rooms, hum.

    .venv/bin/python bench/noise_bench.py --baseline-scripts /tmp/voice-train-before/scripts
    .venv/bin/python bench/noise_bench.py --quick        # 1 minute per talker, a few conditions

The material comes from ``tests/noisy_speech.py`` (espeak-ng talkers with the pauses of read
speech or of narration, and the demo's synthetic voice, noise of several kinds mixed at set
SNRs, rooms simulated by pyroomacoustics), with the clean speech's spans as the truth; it is
made once and cached under ``--workdir``. For every condition and every checkout, one fresh
process runs what the workflow runs (``run_preflight`` then ``prepare_dataset`` with
``config/config.yaml``'s settings; the baseline gets the keys it knows) and reports its clips;
the parent scores them:

* ``cuts_in_pauses``: the share of clip edges (starts and ends) outside every speech span of
  the clean speech (20 ms of tolerance);
* ``kept``: the seconds of clean speech inside kept clips, and that against what the same code
  keeps of the clean recording;
* what preflight said (a refusal's first words), forced cuts, clips dropped as noisy.

Prints one JSON line per condition and checkout to stderr as it goes, then a JSON summary and
a Markdown table (goals against the energy method of the baseline, in the same run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import benchlib

sys.path.insert(0, str(benchlib.ROOT / "tests"))

# Bump when the material or its truth changes, so stale cached recordings are not reused (2: an
# espeak utterance ends at its last 10 ms frame within 50 dB of its loudest; 3: the speech comes from
# libespeak-ng 1.52 in the espeakng-loader wheel, one seeded process per utterance).
MATERIAL_VERSION = 3
TALKERS = ("espeak", "narration", "demo")
RATE = 22050  # espeak-ng's own rate; prepare resamples to 32 kHz as for any recording
CONDITIONS = (
    "clean",
    "hum_hiss_10db",
    "pink_10db",
    "brown_10db",
    "babble_10db",
    "clatter_10db",
    "household_10db",
    "pink_5db",
    "babble_5db",
    "household_5db",
    "room_0.5s",
    "room_1.0s",
    "room_0.7s_household_10db",
)
QUICK = ("clean", "household_10db", "babble_10db", "pink_5db", "room_1.0s")
GOALS = {"clean": 0.99, "10db": 0.95, "room": 0.95, "5db": 0.90}


def goal(condition: str) -> float:
    """The issue's goal for the share of cuts in pauses under ``condition``."""
    if condition == "clean":
        return GOALS["clean"]
    if condition.endswith("_5db"):
        return GOALS["5db"]
    return GOALS["room"] if condition.startswith("room_") else GOALS["10db"]


def material(workdir: Path, talker: str, seed: int, minutes: float, conditions: list[str]) -> dict[str, Path]:
    """The FLAC of each condition of one talker's speech, and its truth (JSON); made on first use."""
    import numpy as np
    import soundfile as sf

    import noisy_speech as ns

    folder = workdir / f"{talker}_{seed}_{minutes:g}min_v{MATERIAL_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    truth = folder / "truth.json"
    paths = {c: folder / f"{c}.flac" for c in conditions}
    missing = [c for c, p in paths.items() if not p.exists()]
    if not missing and truth.exists():
        return {**paths, "truth": truth}
    if talker == "demo":
        speech = ns.demo_speech(minutes * 60, RATE, seed)
    else:  # espeak: pauses as in read speech; narration: mostly short ones, as a story is told
        speech = ns.espeak_speech(minutes * 60, RATE, seed, pauses="read" if talker == "espeak" else talker)
    known = json.loads(truth.read_text()) if truth.exists() else {"spans": speech.spans, "facts": {}}
    for name in missing:
        m = ns.condition(name, speech, seed)
        sf.write(str(paths[name]), np.asarray(m.audio), RATE, format="FLAC", subtype="PCM_16")
        known["facts"][name] = m.facts
    truth.write_text(json.dumps(known))
    return {**paths, "truth": truth}


def child(args) -> dict:
    """Preflight and prepare of one recording with the code under ``--scripts``; its clips."""
    import yaml

    from voice_train.errors import VoiceTrainError
    from voice_train.preflight import PreflightSettings, run_preflight
    from voice_train.prepare import PrepareSettings, prepare_dataset
    from voice_train.segment import SegmentSettings

    # The baseline gets the config keys it knows; preflight lets the short material through.
    config = yaml.safe_load((benchlib.ROOT / "config" / "config.yaml").read_text())
    pre = {k: v for k, v in config["preflight"].items() if k in PreflightSettings.__dataclass_fields__}
    pre.update(min_bytes=1, min_duration_s=10)
    fields = set(PrepareSettings.__dataclass_fields__) | set(SegmentSettings.__dataclass_fields__)
    # No guard between the splits: the bench judges cuts and what the clips keep, and the guard
    # leaves out whole clips at split boundaries (voice_train.splits).
    prepare = {k: v for k, v in config["prepare"].items() if k in fields} | {"split_guard_s": 0.0}
    settings = PrepareSettings.from_config({k: v for k, v in prepare.items() if k in fields})
    t0 = time.perf_counter()
    try:
        marker = run_preflight(args.source, PreflightSettings(**pre))
    except VoiceTrainError as exc:
        return {"refused": "preflight", "message": exc.problem, "wall_s": time.perf_counter() - t0}
    try:
        manifest = prepare_dataset(
            args.source, marker, "bench", "a benchmark voice", args.out, settings, threads=2
        )
    except VoiceTrainError as exc:
        return {"refused": "prepare", "message": exc.problem, "wall_s": time.perf_counter() - t0}
    entries = manifest["entries"]
    return {
        "wall_s": time.perf_counter() - t0,
        "clips": [[e["offset_s"], e["offset_s"] + e["duration_s"]] for e in entries],
        "forced_cuts": sum(e["forced_cut"] for e in entries),
        "dropped_noisy": manifest["summary"].get("dropped_noisy", {}).get("count"),
        "snr_db": manifest["summary"].get("snr_db"),
        "preflight_snr_db": marker.get("snr_db"),
        "hum": marker.get("hum"),
    }


def score(result: dict, spans: list) -> dict:
    import noisy_speech as ns

    if "refused" in result:
        return {"refused": result["refused"], "message": result["message"]}
    clips = [tuple(c) for c in result["clips"]]
    good, edges = ns.cuts_in_pauses(clips, spans)
    return {
        "cuts": edges,
        "cuts_in_pauses": good / edges if edges else None,
        "kept_s": ns.speech_kept_s(clips, spans),
        "forced_cuts": result["forced_cuts"],
        "dropped_noisy": result["dropped_noisy"],
        "snr_db": result.get("snr_db"),
        "preflight_snr_db": result.get("preflight_snr_db"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voice-train-noise-bench"))
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes of speech per talker and seed")
    parser.add_argument(
        "--talkers", nargs="+", default=list(TALKERS), choices=TALKERS, help="espeak-ng reading or narrating"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--conditions", nargs="+", default=list(CONDITIONS), help="names as noisy_speech.condition takes"
    )
    parser.add_argument(
        "--baseline-scripts", type=Path, help="scripts/ of another checkout (the energy method)"
    )
    parser.add_argument("--quick", action="store_true", help="1 minute, one seed, five conditions")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scripts", type=Path, default=benchlib.SCRIPTS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(args.scripts))
    if args.child:
        benchlib.print_json(child(args))
        return
    if args.quick:
        args.minutes, args.seeds, args.conditions = 1.0, args.seeds[:1], list(QUICK)
    args.workdir.mkdir(parents=True, exist_ok=True)
    info = {"machine": benchlib.machine(), "command": sys.argv[1:]}
    codes = {"now": benchlib.SCRIPTS}
    if args.baseline_scripts:
        codes["before"] = args.baseline_scripts
    t0 = time.perf_counter()
    wanted = ["clean", *[c for c in args.conditions if c != "clean"]]
    materials = [
        (t, s, material(args.workdir, t, s, args.minutes, wanted)) for t in args.talkers for s in args.seeds
    ]
    info["make_material_s"] = round(time.perf_counter() - t0, 1)
    rows: dict[tuple[str, str], list[dict]] = {}
    for talker, seed, paths in materials:
        truth = json.loads(paths["truth"].read_text())
        clean_kept = {}
        for condition in wanted:
            for code, scripts in codes.items():
                out = args.workdir / "out"
                shutil.rmtree(out, ignore_errors=True)
                result = benchlib.run_child(
                    [
                        __file__,
                        "--child",
                        "--scripts",
                        str(scripts),
                        "--source",
                        str(paths[condition]),
                        "--out",
                        str(out),
                    ]
                )
                scored = score(result, truth["spans"])
                if condition == "clean":
                    clean_kept[code] = scored.get("kept_s")
                if scored.get("kept_s") is not None and clean_kept.get(code):
                    scored["kept_vs_clean"] = scored["kept_s"] / clean_kept[code]
                scored.update(
                    talker=talker, seed=seed, condition=condition, code=code, wall_s=result["wall_s"]
                )
                scored.update(truth["facts"].get(condition, {}))
                print(json.dumps(benchlib.rounded(scored)), file=sys.stderr, flush=True)
                if condition in args.conditions:
                    rows.setdefault((condition, code), []).append(scored)
    summary = {f"{c}/{code}": pooled(rs) for (c, code), rs in rows.items()}
    benchlib.print_json({**info, "minutes_per_talker": args.minutes, "summary": benchlib.rounded(summary)})
    print(table(summary, args.conditions, list(codes)))


def pooled(rows: list[dict]) -> dict:
    """Cuts pooled over talkers and seeds; speech kept as the worst and mean ratio to clean."""
    done = [r for r in rows if "cuts" in r]
    cuts = sum(r["cuts"] for r in done)
    good = sum(round(r["cuts_in_pauses"] * r["cuts"]) for r in done if r["cuts"])
    ratios = [r["kept_vs_clean"] for r in done if "kept_vs_clean" in r]
    return {
        "runs": len(rows),
        "refused": [f"{r['refused']}: {r['message']}" for r in rows if "refused" in r],
        "cuts": cuts,
        "cuts_in_pauses": good / cuts if cuts else None,
        "kept_vs_clean_min": min(ratios) if ratios else None,
        "kept_vs_clean_mean": sum(ratios) / len(ratios) if ratios else None,
        "forced_cuts": sum(r["forced_cuts"] for r in done),
        "wall_s": sum(r["wall_s"] for r in rows),
    }


def table(summary: dict, conditions: list[str], codes: list[str]) -> str:
    """The README table: per condition, the goal and each checkout's figures."""

    def cell(s: dict) -> str:
        if s["refused"] and not s["cuts"]:
            return "refused: " + "; ".join(sorted(set(m.split(":")[1].strip()[:40] for m in s["refused"])))
        share = "–" if s["cuts_in_pauses"] is None else f"{100 * s['cuts_in_pauses']:.1f}% of {s['cuts']}"
        kept = "–" if s["kept_vs_clean_min"] is None else f"{100 * s['kept_vs_clean_min']:.0f}%"
        extra = f", {len(s['refused'])} refused" if s["refused"] else ""
        return f"{share} · kept ≥ {kept}{extra}"

    head = "| condition | goal | " + " | ".join(codes) + " |"
    lines = [head, "|" + "---|" * (2 + len(codes))]
    for c in conditions:
        cells = [cell(summary[f"{c}/{code}"]) for code in codes if f"{c}/{code}" in summary]
        lines.append(f"| `{c}` | ≥ {100 * goal(c):.0f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
