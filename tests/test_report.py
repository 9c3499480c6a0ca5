"""The report block: key order, values from disk, failures parsed from Snakemake's log."""

from __future__ import annotations

import json

from voice_train.report import (
    HEADER,
    RUNBOOK_KEYS,
    Failure,
    VoiceFiles,
    build_report,
    format_block,
    parse_failure,
    voice_fields,
)

SNAKEMAKE_LOG = """\
Building DAG of jobs...
[Wed Nov 25 02:21:37 2026]
Error in rule prepare:
    message: None
    jobid: 2
    output: results/dataset/bob/voice_dataset_manifest.json, results/dataset/bob/clips
    log: results/logs/prepare/bob.log (check log file(s) for error details)
Shutting down, this might take some time.
Error in rule preflight:
    jobid: 3
"""


def files(tmp_path, voice="bob"):
    return VoiceFiles(voice, f"data/{voice}.flac", f"pre/{voice}.json", f"ds/{voice}/manifest.json")


def test_block_has_the_runbook_keys_in_order_then_ours():
    block = format_block({"objective_status": "completed", "root_cause": "line one\nline two"})
    lines = block.splitlines()
    assert lines[0] == HEADER
    assert [ln.split(":")[0] for ln in lines[1:21]] == list(RUNBOOK_KEYS)
    assert lines[1] == "objective_status: completed"
    assert "root_cause: line one line two" in lines, "values stay on one line"
    assert "first_failed_step: N/A" in lines


def test_failure_is_parsed_with_its_rule_voice_and_cause(tmp_path):
    (tmp_path / "results/logs/prepare").mkdir(parents=True)
    (tmp_path / "results/logs/prepare/bob.log").write_text(
        "progress...\nvoice-train error: data/bob.flac: no usable clips; fix: lower prepare.min_clip_s\n"
    )
    log = tmp_path / "snakemake.log"
    log.write_text(SNAKEMAKE_LOG.replace("results/", f"{tmp_path}/results/"))
    failure = parse_failure([str(log)], ["alice", "bob"])
    assert failure.rule == "prepare" and failure.voice == "bob"
    assert failure.cause == "data/bob.flac: no usable clips; fix: lower prepare.min_clip_s"


def test_a_crash_without_our_error_line_reports_the_last_log_line(tmp_path):
    job_log = tmp_path / "job.log"
    job_log.write_text("Traceback (most recent call last):\n  ...\nMemoryError: out of memory\n\n")
    log = tmp_path / "snakemake.log"
    log.write_text(f"Error in rule prepare:\n    log: {job_log} (check log file(s) for error details)\n")
    assert parse_failure(str(log)).cause == "MemoryError: out of memory"


def test_no_failure_in_log(tmp_path):
    log = tmp_path / "snakemake.log"
    log.write_text("Building DAG of jobs...\nNothing to be done.\n")
    assert parse_failure(log) is None
    assert parse_failure(tmp_path / "absent.log") is None


def test_fields_come_from_disk(tmp_path):
    vf = files(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / vf.source).write_bytes(b"fLaC" + b"\0" * 100)
    (tmp_path / "ds/bob").mkdir(parents=True)
    (tmp_path / vf.manifest).write_text(
        json.dumps({"count": 7, "entries": [], "summary": {"train": {"count": 6}, "valid": {"count": 1}}})
    )
    fields = voice_fields(vf, tmp_path)
    assert fields["audio_exists"] == "true" and fields["audio_size_bytes"] == "104"
    assert fields["audio_is_lfs_pointer"] == "false"
    assert fields["manifest_entry_count"] == "7" and fields["dataset_valid_clips"] == "1"
    assert fields["objective_status"] == "blocked" and fields["first_failed_step"] == "train"
    assert build_report([vf], tmp_path) == build_report([vf], tmp_path), "same files, same block"


def test_failure_of_one_voice_blocks_the_others(tmp_path):
    failure = Failure(
        "preflight", "bob", "logs/bob.log", "data/bob.flac: audio file not found; fix: put it there"
    )
    bob = voice_fields(files(tmp_path, "bob"), tmp_path, failure)
    alice = voice_fields(files(tmp_path, "alice"), tmp_path, failure)
    assert bob["objective_status"] == "failed" and bob["root_cause"] == "data/bob.flac: audio file not found"
    assert bob["next_unblock_action"] == "put it there"
    assert alice["objective_status"] == "blocked" and "bob" in alice["root_cause"]
