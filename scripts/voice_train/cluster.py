"""Slurm jobs that no node of their partition could run, found before the first one is submitted.

Slurm keeps a job that asks for more CPUs than any node of its partition has pending forever
(reason ``PartitionConfig``), and refuses too much memory or too many GPUs only when that job is
submitted, maybe hours into a run. The workflow compares every job's request with the nodes that
``sinfo`` lists and stops at once with one line per rule: the request, the limit and the fix.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

# What sinfo is asked for, one line per node and partition: "gpu 2 24105 gpu:1" ("cpu*": the default).
SINFO = ["sinfo", "--noheader", "--Node", "--format", "%P %c %m %G"]


@dataclass(frozen=True)
class Size:
    """What a node offers, or what a job asks for."""

    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Request:
    rule: str
    partition: str | None  # None: the cluster's default partition
    size: Size


# Per field of Size: its unit, and the profile setting that makes a job fit a node offering {n}.
_FIXES = {
    "cpus": ("CPUs", "--max-threads {n} (or set-threads: {rule}: {n} in the profile)"),
    "mem_mb": ("MB of memory", "set-resources: {rule}: mem_mb: {n} in the profile"),
    "gpus": ("GPUs", "a partition with GPUs as slurm_partition for {rule} (or {rule}.device: cpu)"),
}


def parse_nodes(sinfo_output: str) -> tuple[dict[str, list[Size]], str | None]:
    """Partition -> the size of each of its nodes, and the default partition, from ``SINFO``'s output."""
    nodes: dict[str, list[Size]] = {}
    default = None
    for line in sinfo_output.splitlines():
        partition, cpus, mem_mb, gres = line.split()
        if partition.endswith("*"):
            partition = default = partition[:-1]
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[\w.-]+)?:(\d+)", gres))  # gpu:2, gpu:a100:4(S:0)
        nodes.setdefault(partition, []).append(Size(int(cpus), int(mem_mb), gpus))
    return nodes, default


def cluster_nodes() -> tuple[dict[str, list[Size]], str | None]:
    """This cluster's nodes by partition, and its default partition (see ``parse_nodes``)."""
    return parse_nodes(subprocess.run(SINFO, capture_output=True, text=True, check=True).stdout)


def request_of(job) -> Request:
    """What a Snakemake job will ask Slurm for, as the slurm executor submits it: its threads as CPUs
    (or ``cpus_per_task``), ``mem_mb``, ``gpu``, in partition ``slurm_partition``."""
    resources = job.resources
    wanted = (resources.get("cpus_per_task") or job.threads, resources.get("mem_mb"), resources.get("gpu"))
    return Request(
        job.rule.name,
        resources.get("slurm_partition"),
        Size(*(value if isinstance(value, int) else 0 for value in wanted)),
    )


def unrunnable(requests: list[Request], nodes: dict[str, list[Size]], default: str | None) -> list[str]:
    """One line per rule whose jobs no node of their partition can run: the request, the limit, the fix."""
    problems: dict[str, str] = {}
    for request in requests:
        rule, partition, asks = request.rule, request.partition or default, request.size
        sizes = nodes.get(partition)
        if not sizes:
            problems[rule] = (
                f"rule {rule} goes to partition {partition}, which sinfo does not list "
                f"({', '.join(nodes)}); fix: slurm_partition for {rule} in the profile"
            )
        elif not any(all(getattr(asks, f) <= getattr(size, f) for f in _FIXES) for size in sizes):
            problems[rule] = _why(rule, partition, asks, sizes)
    return list(problems.values())


def _why(rule: str, partition: str, asks: Size, sizes: list[Size]) -> str:
    lines = []
    for field, (unit, fix) in _FIXES.items():
        wanted, largest = getattr(asks, field), max(getattr(size, field) for size in sizes)
        if wanted > largest:
            lines.append(
                f"rule {rule} asks partition {partition} for {wanted} {unit}, but its largest node has "
                f"{largest} {unit}; fix: {fix.format(n=largest, rule=rule)}"
            )
    # Each request fits some node, but no node has them all at once.
    return "; ".join(lines) or (
        f"rule {rule} asks partition {partition} for {asks.cpus} CPUs, {asks.mem_mb} MB and {asks.gpus} "
        "GPUs, which no node of it has at once; fix: smaller requests in the profile"
    )
