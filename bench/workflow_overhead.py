"""Snakemake's own overhead on a finished demo: a dry run and a no-op run vs starting snakemake.

    .venv/bin/python bench/workflow_overhead.py             # 5 interleaved rounds
    .venv/bin/python bench/workflow_overhead.py --quick     # 2 rounds (the demo still runs once)

Copies the workflow (Snakefile, rules, scripts, config, envs, profiles) into ``--workdir`` and
runs the demo there once (``snakemake --cores 2 --configfile config/demo.yaml``; about a
minute, skipped when a finished copy is already there). Then, in each round and one after
another: ``snakemake --version`` (the baseline: Python and snakemake's imports),
``snakemake -n`` and ``snakemake --cores all`` (nothing to do: the DAG, the config
validation, the input functions, the file checks and the onsuccess report block), each with
the demo config. Wall times are medians over rounds; overhead is a median minus the
baseline's. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib

PARTS = ("Snakefile", "rules", "scripts", "config", "envs", "profiles")
DEMO = ("--configfile", "config/demo.yaml")
COMMANDS = {
    "version": ("--version",),
    "dry_run": ("-n", *DEMO),
    "noop_run": ("--cores", "all", *DEMO),
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True, check=True
    )


def finished_demo(workdir: Path) -> Path:
    """A copy of the workflow with the demo run to completion in it."""
    wf = workdir / "workflow"
    if wf.exists() and "Nothing to be done" in snakemake(wf, "-n", *DEMO).stdout:
        return wf
    shutil.rmtree(wf, ignore_errors=True)
    wf.mkdir(parents=True)
    for part in PARTS:
        src = benchlib.ROOT / part
        if src.is_dir():
            shutil.copytree(src, wf / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, wf / part)
    snakemake(wf, "--cores", "2", *DEMO)
    return wf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/voice-train-bench"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2

    info = {"machine": benchlib.machine(), "command": sys.argv[1:]}
    t0 = time.perf_counter()
    wf = finished_demo(args.workdir)
    info["demo_s"] = round(time.perf_counter() - t0, 1)
    info["snakemake"] = snakemake(wf, "--version").stdout.strip()
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            t0 = time.perf_counter()
            proc = snakemake(wf, *command)
            walls[name].append(time.perf_counter() - t0)
            if name != "version" and "Nothing to be done" not in proc.stdout + proc.stderr:
                raise RuntimeError(
                    f"snakemake {' '.join(command)} had work to do:\n{proc.stdout}{proc.stderr}"
                )
    med = {name: benchlib.median(w) for name, w in walls.items()}
    results = {
        "rounds": args.rounds,
        "median_s": med,
        "overhead_s": {name: med[name] - med["version"] for name in ("dry_run", "noop_run")},
        "ratio_to_version": {name: med[name] / med["version"] for name in ("dry_run", "noop_run")},
        "raw_s": walls,
        "load_avg_end": benchlib.load_average(),
    }
    benchlib.print_json(benchlib.rounded({**info, **results}))


if __name__ == "__main__":
    main()
