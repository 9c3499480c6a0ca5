"""The workflow's wiring: snakemake runs in temporary copies on small generated audio."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import DEMO, copy_workflow, report_fields, short_demo, snakemake

pytestmark = pytest.mark.workflow
RULES = ("demo_source", "preflight", "prepare", "model", "encode", "train", "sample", "evaluate", "report")


def pending_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> count of the jobs a dry run would execute."""
    out = snakemake(workdir, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(n) for rule, n in rows if rule != "total"}


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
    assert fields["objective_status"] == "completed", fields["root_cause"]
    assert fields["first_failed_step"] == "N/A" and fields["next_unblock_action"] == "none"
    status = json.loads(fields["training_status_json"])
    assert status == json.loads((workdir / fields["training_status_path"]).read_text())
    assert status["status"] == "completed" and status["jobType"] == "tts_voice_train"
    assert status["step"] == status["total_steps"] == 16 and status["best_val_loss"] < status["base_val_loss"]
    checkpoint = workdir / fields["checkpoint_path"]
    assert checkpoint.name == "tts_voice_train_musicgen_small.pt" and fields["checkpoint_exists"] == "true"
    assert fields["checkpoint_sha256"] == status["checkpoint_sha256"]
    assert fields["checkpoint_size_bytes"] == str(checkpoint.stat().st_size)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [checkpoint.name], "one copy of the LM"
    samples = fields["sample_paths"].split(" | ")
    assert [Path(p).name for p in samples] == ["text.wav", "continuation.wav"]
    assert all((workdir / p).stat().st_size > 1000 for p in samples)
    for rule in RULES:
        assert list((workdir / "results/logs" / rule).glob("*.log")), f"{rule} wrote a log"


def test_the_demo_is_evaluated_on_its_test_block_and_its_figures_are_in_the_block_and_the_summary(
    finished_demo,
):
    workdir, proc = finished_demo
    fields = report_fields(workdir)
    evaluation = json.loads((workdir / "results/eval/demo_voice/voice_eval.json").read_text())
    manifest = json.loads((workdir / "results/dataset/demo_voice/voice_dataset_manifest.json").read_text())
    assert (
        evaluation["status"] == "completed" and evaluation["checkpoint_sha256"] == fields["checkpoint_sha256"]
    )
    # No prompt, reference or ceiling clip is a training clip (or a validation clip).
    split_of = {e["target"]: e["split"] for e in manifest["entries"]}
    used = evaluation["held_out"]["clips"] + evaluation["prompts"]["clips"]
    assert used and {split_of[c] for c in used} == {"test"} and evaluation["held_out"]["split"] == "test"
    summary = (workdir / "results/report/summary.html").read_text(encoding="utf-8")
    for group in ("finetuned", "base", "ceiling"):
        figure = fields[f"voice_similarity_{group}"]
        assert re.fullmatch(r"0\.\d{3} \+/- 0\.\d{3} \(n=\d+\)", figure), (group, figure)
        assert float(figure.split()[0]) == pytest.approx(evaluation["groups"][group]["all"]["mean"], abs=5e-4)
        assert figure.replace("+/-", "±") in summary
    assert fields["voice_similarity_roundtrip"] != "N/A" and fields["voice_verdict"] != "N/A"
    assert fields["voice_verdict"] in summary.replace("&#x27;", "'")
    assert fields["dataset_test_clips"] == str(manifest["summary"]["test"]["count"])
    # The tiny model's pieces sit at the floor: the run says so, in the json, log and page.
    assert "at the floor" in evaluation["note"] and "at the floor" in summary
    assert "at the floor" in (workdir / "results/logs/evaluate/demo_voice.log").read_text()
    assert "evaluate demo_voice: similarity to her held-out voice: fine-tuned 0." in proc.stderr
    listen = (workdir / "results/eval/demo_voice/listen.html").read_text(encoding="utf-8")
    assert listen.count("<audio") >= 4 and (workdir / "results/eval/demo_voice/pieces").is_dir()


def test_second_run_has_nothing_to_do(demo_copy):
    proc = snakemake(demo_copy, *DEMO)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dry_run_lists_the_pending_jobs_and_writes_nothing(tmp_path):
    workdir = short_demo(tmp_path / "wf")
    jobs = pending_jobs(workdir, *DEMO)
    assert jobs == dict.fromkeys(("all", *RULES), 1)
    assert not (workdir / "results").exists() and not (workdir / "data").exists()


def test_touching_the_source_reruns_everything_downstream(demo_copy):
    source = demo_copy / "data/demo/demo_voice.flac"
    later = max(p.stat().st_mtime for p in (demo_copy / "results").rglob("*")) + 10  # newer than all
    os.utime(source, (later, later))
    assert pending_jobs(demo_copy, *DEMO) == dict.fromkeys(
        ("all", "preflight", "prepare", "encode", "train", "sample", "evaluate", "report"), 1
    )


def test_changing_a_prepare_parameter_reruns_prepare_but_not_preflight(demo_copy):
    """Also turns speaker screening on, with the voice named by its own reference clip (one of the
    demo's clips, copied out of the dataset first)."""
    dataset = demo_copy / "results/dataset/demo_voice"
    reference = demo_copy / "data/refs/demo_voice.flac"
    reference.parent.mkdir(parents=True)
    reference.write_bytes(sorted((dataset / "clips").glob("*.flac"))[0].read_bytes())
    cfg_path = demo_copy / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["prepare"]["max_clip_s"] = 6
    cfg["speakers"]["enabled"] = True
    cfg["voices"]["demo_voice"]["speaker_reference"] = "data/refs/demo_voice.flac"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    marker = demo_copy / "results/preflight/demo_voice.json"
    marker_mtime = marker.stat().st_mtime
    assert pending_jobs(demo_copy, *DEMO) == dict.fromkeys(
        ("all", "prepare", "encode", "train", "sample", "evaluate", "report"), 1
    )
    snakemake(demo_copy, *DEMO, "--until", "prepare")  # what follows is covered by the dry run above
    assert marker.stat().st_mtime == marker_mtime
    manifest = json.loads((dataset / "voice_dataset_manifest.json").read_text())
    assert max(e["duration_s"] for e in manifest["entries"]) <= 6
    speakers = manifest["summary"]["speakers"]
    assert speakers["target"] == "reference" and speakers["reference"] == "data/refs/demo_voice.flac"
    others = manifest["summary"]["dropped_other_speakers"]["duration_s"]
    assert others < 0.1 * manifest["summary"]["speech_duration_s"], "one voice: next to nothing left out"
    assert all(e["speaker_similarity"] >= cfg["speakers"]["threshold"] for e in manifest["entries"])
    # Another reference clip: prepare again (Snakemake skips an input whose mtime alone changed).
    reference.write_bytes(sorted((dataset / "clips").glob("*.flac"))[-1].read_bytes())
    assert "prepare" in pending_jobs(demo_copy, *DEMO)


def test_changing_a_train_parameter_reruns_train_but_not_encode(demo_copy):
    cfg_path = demo_copy / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["lr"] = 1.0e-3
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert pending_jobs(demo_copy, *DEMO) == dict.fromkeys(
        ("all", "train", "sample", "evaluate", "report"), 1
    )


def test_evaluate_reruns_for_its_own_settings_and_the_sample_keys_it_uses_only(demo_copy):
    off = ("--config", "evaluate={'enabled': False}")
    assert pending_jobs(demo_copy, *DEMO, *off) == dict.fromkeys(("all", "evaluate", "report"), 1)
    longer = ("--config", "sample={'duration_s': 2}")
    assert pending_jobs(demo_copy, *DEMO, *longer) == dict.fromkeys(("all", "sample", "report"), 1)


def test_a_failed_training_ends_with_a_report_that_names_it(demo_copy):
    cfg_path = demo_copy / "config/demo.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["device"] = "cuda:7"  # no such GPU here
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(demo_copy, *DEMO, check=False)
    assert proc.returncode != 0
    fields = report_fields(demo_copy)
    assert fields["objective_status"] == "failed" and fields["first_failed_step"] == "train"
    assert "no CUDA GPU is visible" in fields["root_cause"]
    assert fields["next_unblock_action"] == "set train.device: auto or cpu"
    assert fields["failed_rule_log"].endswith("results/logs/train/demo_voice.log")
    # Snakemake removed the failed job's outputs; the status was kept beside the resume state.
    assert json.loads(fields["training_status_json"])["status"] == "error"


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


def test_numbers_in_any_notation_pass_in_the_file_and_on_the_command_line(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    assert "lr: 2e-5" in (workdir / "config/config.yaml").read_text()  # YAML 1.1 reads it as a string
    proc = snakemake(
        workdir, "-n", "--config", "train={'lr': 1e-5, 'lora_lr': 2E-4, 'steps': 1e3}", check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("prepare={'max_clip_s': 'long'}", "max_clip_s"),
        ("unknown_key=1", "unknown_key"),
        ("voices={'../evil': {'description': 'x'}}", "../evil"),
        ("train={'lr': 'fast'}", "'fast' is not of type 'number'"),
        ("sample={'prompt_s': 9}", "sample.prompt_s (9) must be shorter than sample.duration_s (8)"),
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
    assert pending_jobs(demo_copy, *DEMO, "--config", override) == dict.fromkeys(
        ("all", "prepare", "encode", "train", "sample", "evaluate", "report"), 1
    )


def test_html_report_has_the_loss_curve_the_samples_and_the_summary(demo_copy):
    html_file = demo_copy / "results/report.html"
    snakemake(demo_copy, *DEMO, "--report", str(html_file))
    html = html_file.read_text(encoding="utf-8")
    for name in ("loss_curve.png", "text.wav", "continuation.wav", "listen.html", "summary.html"):
        assert name in html, f"{name} is in the report"
    for category in ("Training", "Samples", "Report"):
        assert category in html
    plot = demo_copy / "results/train/demo_voice/loss_curve.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    listen = (demo_copy / "results/samples/demo_voice/listen.html").read_text(encoding="utf-8")
    assert listen.count('src="data:audio/wav;base64,') == 2
    summary = (demo_copy / "results/report/summary.html").read_text(encoding="utf-8")
    assert "validation loss: base model" in summary and "=== COLAB TRAIN REPORT ===" in summary


def test_voices_given_with_config_replace_the_config_files_voices(tmp_path, voice_flac):
    workdir = copy_workflow(tmp_path / "wf")
    voices = json.dumps({"v1": {"source": str(voice_flac), "description": "a test voice"}})
    jobs = snakemake(workdir, "-n", "--config", f"voices={voices}").stdout
    assert set(re.findall(r"wildcards: voice=(\S+)", jobs)) == {"v1"}
