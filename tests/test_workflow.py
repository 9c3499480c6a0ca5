"""The workflow's wiring: snakemake runs in temporary copies on small generated audio."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

DEMO = ("--configfile", "config/demo.yaml")
REPORT = Path("results/report/colab_train_report.txt")


def short_demo(workdir: Path) -> Path:
    """A copy of the workflow whose demo recording is 60 s instead of 150 s."""
    copy_workflow(workdir)
    cfg_path = workdir / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["demo"]["duration_s"] = 60
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


def pending_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> count of the jobs a dry run would execute."""
    out = snakemake(workdir, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(n) for rule, n in rows if rule != "total"}


def report_fields(workdir: Path) -> dict[str, str]:
    lines = (workdir / REPORT).read_text().splitlines()
    assert lines[0] == "=== COLAB TRAIN REPORT ==="
    return dict(line.split(": ", 1) for line in lines[1:] if line)


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory):
    """The demo run once to the end; tests that change things work on copies of it."""
    workdir = short_demo(tmp_path_factory.mktemp("demo") / "wf")
    proc = snakemake(workdir, *DEMO)
    return workdir, proc


@pytest.fixture
def demo_copy(finished_demo, tmp_path):
    workdir, _ = finished_demo
    dest = tmp_path / "wf"
    shutil.copytree(workdir, dest, symlinks=True)
    return dest


def test_demo_runs_end_to_end_and_prints_the_report(finished_demo):
    workdir, proc = finished_demo
    assert "=== COLAB TRAIN REPORT ===" in proc.stdout
    fields = report_fields(workdir)
    keys = list(fields)
    assert keys[:20] == [
        "objective_status", "first_failed_step", "root_cause", "head_commit", "python_version",
        "gpu_available", "audio_path", "audio_exists", "audio_size_bytes", "audio_is_lfs_pointer",
        "manifest_path", "manifest_exists", "manifest_entry_count", "training_status_path",
        "training_status_json", "checkpoint_path", "checkpoint_exists", "checkpoint_size_bytes",
        "checkpoint_sha256", "next_unblock_action",
    ]  # fmt: skip
    manifest = json.loads((workdir / fields["manifest_path"]).read_text())
    assert fields["manifest_entry_count"] == str(manifest["count"]) and manifest["count"] >= 4
    assert fields["audio_exists"] == "true" and fields["audio_is_lfs_pointer"] == "false"
    # No training stage yet: the block says so instead of claiming success.
    assert fields["objective_status"] == "blocked" and fields["checkpoint_exists"] == "false"
    for rule in ("demo_source", "preflight", "prepare", "report"):
        assert list((workdir / "results/logs" / rule).glob("*.log")), f"{rule} wrote a log"


def test_second_run_has_nothing_to_do(demo_copy):
    proc = snakemake(demo_copy, *DEMO)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dry_run_lists_the_pending_jobs_and_writes_nothing(tmp_path):
    workdir = short_demo(tmp_path / "wf")
    jobs = pending_jobs(workdir, *DEMO)
    assert jobs == {"all": 1, "demo_source": 1, "preflight": 1, "prepare": 1, "report": 1}
    assert not (workdir / "results").exists() and not (workdir / "data").exists()


def test_touching_the_source_reruns_everything_downstream(demo_copy):
    source = demo_copy / "data/demo/demo_voice.flac"
    later = source.stat().st_mtime + 10
    os.utime(source, (later, later))
    assert pending_jobs(demo_copy, *DEMO) == {"all": 1, "preflight": 1, "prepare": 1, "report": 1}


def test_changing_a_prepare_parameter_reruns_prepare_but_not_preflight(demo_copy):
    cfg_path = demo_copy / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["prepare"]["max_clip_s"] = 6
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    marker = demo_copy / "results/preflight/demo_voice.json"
    marker_mtime = marker.stat().st_mtime
    assert pending_jobs(demo_copy, *DEMO) == {"all": 1, "prepare": 1, "report": 1}
    snakemake(demo_copy, *DEMO)
    assert marker.stat().st_mtime == marker_mtime
    manifest = json.loads((demo_copy / "results/dataset/demo_voice/voice_dataset_manifest.json").read_text())
    assert max(e["duration_s"] for e in manifest["entries"]) <= 6


def test_missing_recording_fails_in_preflight_and_the_report_says_so(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    proc = snakemake(workdir, check=False)
    assert proc.returncode != 0
    assert "audio file not found" in proc.stdout + proc.stderr
    fields = report_fields(workdir)
    assert fields["objective_status"] == "failed"
    assert fields["first_failed_step"] == "preflight"
    assert "audio file not found" in fields["root_cause"]
    assert fields["audio_exists"] == "false"
    assert "put the recording there" in fields["next_unblock_action"]
    assert not (workdir / "results/preflight/auntie_dottie.json").exists()


def test_lfs_pointer_fails_with_a_clear_report(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    source = workdir / "data/knowledge_audio_source/auntie_dottie.flac"
    source.parent.mkdir(parents=True)
    source.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 99999999\n")
    proc = snakemake(workdir, check=False)
    assert proc.returncode != 0
    fields = report_fields(workdir)
    assert fields["objective_status"] == "failed" and fields["audio_is_lfs_pointer"] == "true"
    assert "git lfs pull" in fields["next_unblock_action"]
    assert source.read_text().startswith("version https://git-lfs"), "the user's file is untouched"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("prepare={'max_clip_s': 'long'}", "max_clip_s"),
        ("unknown_key=1", "unknown_key"),
        ("voices={'../evil': {'description': 'x'}}", "../evil"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, override, named):
    workdir = copy_workflow(tmp_path / "wf")
    proc = snakemake(workdir, "--config", override, check=False)
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_a_section_given_with_config_overrides_with_numbers_intact(demo_copy):
    cfg = yaml.safe_load((demo_copy / "config/demo.yaml").read_text())
    prepare = dict(cfg["prepare"], max_clip_s=6)
    override = "prepare=" + json.dumps(prepare)
    assert pending_jobs(demo_copy, *DEMO, "--config", override) == {"all": 1, "prepare": 1, "report": 1}
