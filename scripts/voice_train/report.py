"""The ``=== COLAB TRAIN REPORT ===`` block: built from files on disk, never from memory.

The same files give the same block, whether the report rule writes it after a good run
or the workflow's ``onerror`` handler writes it after a failure.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ERROR_PREFIX
from .eval_figures import group_figures, report_values
from .fsutil import LFS_POINTER_PREFIX, read_json, sha256_file, write_text_atomic

HEADER = "=== COLAB TRAIN REPORT ==="
NA = "N/A"
# The runbook's keys, in the order users' parsers expect; ours follow them.
RUNBOOK_KEYS = (
    "objective_status",
    "first_failed_step",
    "root_cause",
    "head_commit",
    "python_version",
    "gpu_available",
    "audio_path",
    "audio_exists",
    "audio_size_bytes",
    "audio_is_lfs_pointer",
    "manifest_path",
    "manifest_exists",
    "manifest_entry_count",
    "training_status_path",
    "training_status_json",
    "checkpoint_path",
    "checkpoint_exists",
    "checkpoint_size_bytes",
    "checkpoint_sha256",
    "next_unblock_action",
)
EXTRA_KEYS = (
    "voice",
    "preflight_marker",
    "preflight_warnings",
    "dataset_train_clips",
    "dataset_valid_clips",
    "dataset_kept_duration_s",
    "training_device",
    "training_steps",
    "training_final_loss",
    "training_base_val_loss",
    "training_best_val_loss",
    "training_best_step",
    "sample_paths",
    "voice_similarity_finetuned",
    "voice_similarity_base",
    "voice_similarity_ceiling",
    "failed_rule_log",
    # Added with the split by time and evaluate on the test block (after the keys above, which
    # earlier parsers know in that order).
    "dataset_test_clips",
    "dataset_speech_minutes",
    "training_selection",
    "training_chosen_step",
    "voice_similarity_roundtrip",
    "voice_copy_share",
    "voice_no_speech",
    "voice_quality_finetuned",
    "voice_quality_base",
    "voice_quality_real",
    "voice_quality_roundtrip",
    "voice_verdict",
)


@dataclass(frozen=True)
class VoiceFiles:
    """Where one voice's artifacts live (from the config)."""

    voice: str
    source: str
    preflight: str
    manifest: str
    status: str = ""
    status_mirror: str = ""  # the train rule's copy in the state dir: it survives a failed job
    checkpoint_file: str = ""
    samples: tuple[str, ...] = ()
    evaluation: str = ""  # rule evaluate's voice_eval.json


@dataclass(frozen=True)
class Failure:
    """The first failed job of a run, as Snakemake's log tells it."""

    rule: str
    voice: str | None
    log: str | None
    cause: str


def _bool(value: bool) -> str:
    return "true" if value else "false"


def head_commit(workdir: Path) -> str:
    """The checked-out commit of ``workdir``'s repository, or N/A outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return NA
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else NA


def gpu_available() -> bool:
    """Whether an NVIDIA GPU is visible, read from the driver's files (no torch import)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _fix_of(cause: str) -> str | None:
    match = re.search(r"; fix: (.+)$", cause)
    return match.group(1) if match else None


def checkpoint_verified(path: Path, status: dict | None) -> tuple[bool, str]:
    """The checkpoint is a complete torch archive whose sha256 is the one the train rule recorded.

    Read without torch: a torch checkpoint is a zip file with a ``data.pkl`` record.
    """
    if not path.is_file():
        return False, "the checkpoint does not exist"
    if status is None or status.get("status") != "completed":
        return False, "train_status.json does not say the training completed"
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                return False, "the checkpoint is not a torch archive"
    except (OSError, zipfile.BadZipFile):
        return False, "the checkpoint is truncated or not a torch archive"
    if sha256_file(path) != status.get("checkpoint_sha256"):
        return False, "the checkpoint's sha256 differs from the one in train_status.json"
    return True, "ok"


def _training_fields(
    files: VoiceFiles, workdir: Path, fields: dict[str, str]
) -> tuple[dict | None, bool, str]:
    status_file = workdir / files.status if files.status else None
    status = read_json(status_file) if status_file else None
    if status is None and files.status_mirror:
        status = read_json(workdir / files.status_mirror)
    if files.status:
        fields["training_status_path"] = files.status
    if status is not None:
        fields["training_status_json"] = json.dumps(status, separators=(",", ":"))
        fields["training_device"] = str(status.get("device", NA))
        fields["training_steps"] = f"{status.get('step', NA)}/{status.get('total_steps', NA)}"
        for key, name in (
            ("training_final_loss", "loss"),
            ("training_base_val_loss", "base_val_loss"),
            ("training_best_val_loss", "best_val_loss"),
            ("training_best_step", "best_step"),
        ):
            value = status.get(name)
            fields[key] = (
                NA if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
            )
    verified, why = False, "no checkpoint path configured"
    if files.checkpoint_file:
        checkpoint = workdir / files.checkpoint_file
        fields["checkpoint_path"] = files.checkpoint_file
        fields["checkpoint_exists"] = _bool(checkpoint.is_file())
        if checkpoint.is_file():
            fields["checkpoint_size_bytes"] = str(checkpoint.stat().st_size)
            fields["checkpoint_sha256"] = sha256_file(checkpoint)
        verified, why = checkpoint_verified(checkpoint, status)
    samples = [s for s in files.samples if (workdir / s).is_file()]
    if samples:
        fields["sample_paths"] = " | ".join(samples)
    return status, verified, why


def voice_fields(files: VoiceFiles, workdir: Path, failure: Failure | None = None) -> dict[str, str]:
    """All report keys for one voice, read from disk; ``failure`` is the run's first failure."""
    source = workdir / files.source
    manifest_file = workdir / files.manifest
    marker = read_json(workdir / files.preflight)
    manifest = read_json(manifest_file)
    fields = dict.fromkeys(RUNBOOK_KEYS + EXTRA_KEYS, NA)
    fields.update(
        voice=files.voice,
        head_commit=head_commit(workdir),
        python_version=platform.python_version(),
        gpu_available=_bool(gpu_available()),
        audio_path=files.source,
        audio_exists=_bool(source.is_file()),
        manifest_path=files.manifest,
        manifest_exists=_bool(manifest is not None),
        checkpoint_exists="false",
    )
    if source.is_file():
        with open(source, "rb") as fh:
            fields["audio_is_lfs_pointer"] = _bool(fh.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX)
        fields["audio_size_bytes"] = str(source.stat().st_size)
    if marker is not None:
        fields["preflight_marker"] = files.preflight
        fields["preflight_warnings"] = " | ".join(marker.get("warnings", [])) or "none"
    if manifest is not None:
        summary = manifest.get("summary", {})
        fields["manifest_entry_count"] = str(manifest.get("count", len(manifest.get("entries", []))))
        fields["dataset_train_clips"] = str(summary.get("train", {}).get("count", NA))
        fields["dataset_valid_clips"] = str(summary.get("valid", {}).get("count", NA))
        fields["dataset_kept_duration_s"] = str(summary.get("kept_duration_s", NA))
        fields["dataset_test_clips"] = str(summary.get("test", {}).get("count", NA))
        fields["dataset_speech_minutes"] = (
            ", ".join(
                f"{split} {summary[split]['duration_s'] / 60:.1f}"
                for split in ("train", "valid", "test")
                if isinstance(summary.get(split), dict) and "duration_s" in summary[split]
            )
            or NA
        )

    status, verified, why = _training_fields(files, workdir, fields)
    evaluation = read_json(workdir / files.evaluation) if files.evaluation else None
    if evaluation and evaluation.get("checkpoint_sha256") != fields["checkpoint_sha256"]:
        evaluation = None  # the figures of another checkpoint (one trained since, or gone)
    for group, figure in group_figures(evaluation).items():
        if group != "roundtrip":
            fields[f"voice_similarity_{group}"] = figure
    fields.update(report_values(evaluation))
    if status:
        fields["training_selection"] = str(status.get("selection") or NA)
        fields["training_chosen_step"] = str(
            status.get("chosen_step") if status.get("chosen_step") is not None else NA
        )
    if failure is not None and failure.voice in (None, files.voice):
        fields.update(
            objective_status="failed",
            first_failed_step=failure.rule,
            root_cause=failure.cause.split("; fix: ")[0],
            failed_rule_log=failure.log or NA,
            next_unblock_action=_fix_of(failure.cause)
            or f"read {failure.log or 'the Snakemake log'}, fix the cause, then rerun snakemake",
        )
    elif manifest is None:
        step = "preflight" if marker is None else "prepare"
        reason = f"rule {failure.rule} failed for voice {failure.voice}" if failure else "it was not run"
        fields.update(
            objective_status="blocked",
            first_failed_step=step,
            root_cause=f"{step} has not completed for this voice: {reason}",
            next_unblock_action="fix the failure above, then rerun snakemake",
        )
    elif verified:
        fields.update(objective_status="completed", next_unblock_action="none")
    else:
        step = "train" if status is None or status.get("status") != "completed" else "checkpoint"
        reason = f"rule {failure.rule} failed for voice {failure.voice}" if failure else "it was not run"
        fields.update(
            objective_status="blocked",
            first_failed_step=step,
            root_cause=f"the dataset is ready but there is no verified checkpoint: {why} ({reason})",
            next_unblock_action="rerun snakemake; training resumes from its saved state",
        )
    return fields


def format_block(fields: dict[str, str]) -> str:
    """The report block: the header, then one ``key: value`` line per key in order."""
    lines = [HEADER]
    for key in RUNBOOK_KEYS + EXTRA_KEYS:
        value = str(fields.get(key, NA)).replace("\n", " ").strip() or NA
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def build_report(voices: list[VoiceFiles], workdir: Path, failure: Failure | None = None) -> str:
    """The whole report: one block per voice, in config order."""
    return "\n".join(format_block(voice_fields(v, workdir, failure)) for v in voices)


def write_report(path: str | Path, text: str) -> None:
    """Write the report file atomically."""
    write_text_atomic(path, text)


_ERROR_IN_RULE = re.compile(r"^Error in rule ([A-Za-z_]\w*):")
_FIELD = re.compile(r"^\s+(log|output|wildcards):\s*(.*)$")


def root_cause(log_path: str | Path | None) -> str | None:
    """The cause of a failure from a rule's log: our one-line error, else the last line."""
    if not log_path:
        return None
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    if ours:
        return ours[-1][len(ERROR_PREFIX) :].strip()
    return lines[-1] if lines else None


def _voice_in(fields: dict[str, str], voices: list[str]) -> str | None:
    """The job's voice: its ``voice`` wildcard, else a configured voice named in its paths."""
    wildcard = re.search(r"\bvoice=([A-Za-z0-9_-]+)", fields.get("wildcards", ""))
    if wildcard:
        return wildcard.group(1)
    parts = re.split(r"[/\\,\s]+", fields.get("output", "") + " " + fields.get("log", ""))
    names = {Path(part).stem for part in parts} | set(parts)
    found = [v for v in voices if v in names]
    return found[0] if len(found) == 1 else None


def parse_failure(snakemake_log: str | Path | list, voices: list[str] = ()) -> Failure | None:
    """The first failed job in Snakemake's own log, with the cause from the job's log.

    ``snakemake_log`` is what Snakemake hands its ``onerror`` handler: a path or a list
    of paths (the first is read).
    """
    if isinstance(snakemake_log, (list, tuple)):
        snakemake_log = snakemake_log[0] if snakemake_log else None
    if not snakemake_log:
        return None
    try:
        text = Path(snakemake_log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _ERROR_IN_RULE.match(line)
        if not match:
            continue
        fields: dict[str, str] = {}
        for follow in lines[i + 1 : i + 30]:
            field = _FIELD.match(follow)
            if field:
                fields[field.group(1)] = field.group(2)
            elif not follow.startswith((" ", "\t")):
                break
        log = fields.get("log", "").split(" (check log")[0].split(",")[0].strip() or None
        rule = match.group(1)
        cause = root_cause(log) or f"rule {rule} failed (see {snakemake_log})"
        return Failure(rule=rule, voice=_voice_in(fields, list(voices)), log=log, cause=cause)
    return None
