"""Shared helpers of the benchmarks: child processes, medians, machine and version facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def run_child(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``args`` (a Python command line) in a fresh process; return the JSON of its last line."""
    proc = subprocess.run(
        [sys.executable, *args], stdout=subprocess.PIPE, env={**os.environ, **(env or {})}, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started, in MB.

    From ``VmHWM``: ``getrusage``'s ``ru_maxrss`` (and so ``/usr/bin/time``) also counts what
    the parent had resident when it forked this process, before the exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict:
    """CPU model, core count, RAM and the load when the benchmark started."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "load_avg_start": load_average(),
    }


def print_json(data: dict) -> None:
    print(json.dumps(data), flush=True)


def rounded(data, digits: int = 3):
    """``data`` with every float rounded, for printing."""
    if isinstance(data, float):
        return round(data, digits)
    if isinstance(data, dict):
        return {k: rounded(v, digits) for k, v in data.items()}
    if isinstance(data, list):
        return [rounded(v, digits) for v in data]
    return data
