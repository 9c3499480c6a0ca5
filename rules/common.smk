# Glue shared by all rules: config validation, paths, wildcard constraints, handlers.
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The config check and the handlers below use the package's light modules in this process.
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from voice_train.cluster import cluster_nodes, request_of, unrunnable  # noqa: E402
from voice_train.config import coerce_to_schema, config_problems  # noqa: E402
from voice_train.evaluate import SAMPLE_KEYS  # noqa: E402
from voice_train.presets import RANDOM_PRESETS, is_random_preset  # noqa: E402
from voice_train.report import VoiceFiles, build_report, parse_failure, write_report  # noqa: E402
from voice_train.train import CHECKPOINT_NAME  # noqa: E402

# `--config voices='{...}'` names the voices of this run: it replaces the config file's map
# (Snakemake would merge the two, and run the file's voices as well).
if "voices" in (workflow.config_settings.config or {}):
    config["voices"] = dict(workflow.config_settings.config["voices"] or {})

# Values given as --config key='{...}' arrive as strings; read them as the schema's types.
_schema = yaml.safe_load((Path(workflow.basedir) / "config/schema.yaml").read_text())
config.update(coerce_to_schema(dict(config), _schema))
validate(config, schema="../config/schema.yaml")
# What the schema cannot check: relations between keys (one line each, before any job runs).
if _problems := config_problems(config):
    raise WorkflowError("voice-train config: " + "\nvoice-train config: ".join(_problems))

PATHS = config["paths"]
VOICES = list(config["voices"])
LOGS = PATHS["logs_dir"]
BENCH = PATHS["benchmarks_dir"]


wildcard_constraints:
    voice=r"[A-Za-z0-9_-]+",
    name=r"[A-Za-z0-9_-]+",
    preset="|".join(RANDOM_PRESETS),


def source_path(voice):
    """The voice's source FLAC: its configured 'source', else paths.source_dir/<voice>.flac."""
    return config["voices"][voice].get("source") or f"{PATHS['source_dir']}/{voice}.flac"


def is_demo_source(path):
    return Path(path).parent == Path(PATHS["demo_dir"])


def source_available(voice):
    """Whether the voice's source exists, or the demo_source rule can make it."""
    path = source_path(voice)
    return Path(path).exists() or is_demo_source(path)


def preflight_input(wildcards):
    """The source as an input when it is available; else no input at all.

    A missing input would stop Snakemake before any job runs, with no report. Without it,
    preflight runs, says clearly that the file is missing, and the report says so too.
    """
    return [source_path(wildcards.voice)] if source_available(wildcards.voice) else []


def source_state(wildcards):
    """Part of preflight's params, so a source that disappears reruns (and fails) preflight."""
    return "present" if source_available(wildcards.voice) else "missing"


def preflight_marker(voice):
    return f"{PATHS['preflight_dir']}/{voice}.json"


def dataset_dir(voice):
    return f"{PATHS['dataset_dir']}/{voice}"


def manifest_path(voice):
    return f"{dataset_dir(voice)}/voice_dataset_manifest.json"


def voice_reference(voice):
    """The clip that names the voice to keep: the voice's own speaker_reference, else
    speakers.reference (None: the voice that speaks most)."""
    return config["voices"][voice].get("speaker_reference") or config["speakers"]["reference"]


def speaker_reference(wildcards):
    """The reference clip as prepare's input, when screening is on and one is set."""
    reference = voice_reference(wildcards.voice)
    return [reference] if config["speakers"]["enabled"] and reference else []


def speaker_settings(wildcards):
    """Prepare's speakers param: the speakers section with this voice's reference."""
    return {**config["speakers"], "reference": voice_reference(wildcards.voice)}


# Speaker screening runs the speaker encoder, which needs torch: prepare then runs in the
# model rules' env (it has torch, librosa and resemblyzer).
PREPARE_ENV = "../envs/train.yaml" if config["speakers"]["enabled"] else "../envs/audio.yaml"


MODEL_NAME = config["model"]["name"]


def model_ref():
    """What the encode/train code loads: a random-init preset's built directory, else model.name."""
    return f"{PATHS['models_dir']}/{MODEL_NAME}" if is_random_preset(MODEL_NAME) else MODEL_NAME


def model_input(wildcards):
    """The model as a file input: a preset's directory (built by rule model), a local directory's
    two files, or nothing for a hub id (read from the Hugging Face cache at run time)."""
    if is_random_preset(MODEL_NAME):
        return [model_ref()]
    if Path(MODEL_NAME).is_dir():
        return [f"{MODEL_NAME}/state_dict.bin", f"{MODEL_NAME}/compression_state_dict.bin"]
    return []


def gpu_jobs(section):
    """Resource ``gpu`` of a model rule: 1 unless its config section pins it to the CPU.

    Profiles cap it (``resources: gpu=1``) so that one GPU runs one model job at a time, and
    cluster profiles map it to a GPU request. A resource, not a param: it never triggers reruns.
    """
    return 0 if str(config[section].get("device", "auto")) == "cpu" else 1


def model_mem_mb(full):
    """Resource ``mem_mb`` of a model rule: ``full`` for a real model. The ``tiny`` preset (the
    demo, the tests) peaks under 1.5 GB, so its cluster jobs ask for 2 GB and fit side by side."""
    return 2000 if MODEL_NAME == "tiny" else full


def tokens_path(voice):
    return f"{PATHS['tokens_dir']}/{voice}.npz"


def status_path(voice):
    return f"{PATHS['train_dir']}/{voice}/train_status.json"


def checkpoint_path(voice):
    return f"{PATHS['checkpoint_dir']}/{voice}/{CHECKPOINT_NAME}"


def state_dir(voice):
    return f"{PATHS['state_dir']}/{voice}"


def loss_plot_path(voice):
    return f"{PATHS['train_dir']}/{voice}/loss_curve.png"


def listen_page_path(voice):
    return f"{PATHS['samples_dir']}/{voice}/listen.html"


def sample_paths(voice):
    return [f"{PATHS['samples_dir']}/{voice}/{kind}.wav" for kind in ("text", "continuation")]


def evaluation_path(voice):
    return f"{PATHS['eval_dir']}/{voice}/voice_eval.json"


def sample_settings_for_evaluate():
    """The sample keys evaluate reuses (prompt length and sampling): only these rerun it."""
    return {key: config["sample"][key] for key in SAMPLE_KEYS}


def voice_outputs(voice):
    """Every file the workflow makes for ``voice``: rule ``all`` asks for each of them.

    Snakemake does not redo a job whose outputs are missing when the jobs after it are done
    (it treats them like deleted intermediates). A run killed after Snakemake removed a job's
    old outputs would then leave them missing for good; asking for them here redoes that job.
    """
    dataset = dataset_dir(voice)
    return [
        preflight_marker(voice),
        manifest_path(voice),
        f"{dataset}/data.jsonl",
        f"{dataset}/train/data.jsonl",
        f"{dataset}/valid/data.jsonl",
        f"{dataset}/test/data.jsonl",
        f"{dataset}/clips",
        tokens_path(voice),
        status_path(voice),
        checkpoint_path(voice),
        loss_plot_path(voice),
        *sample_paths(voice),
        listen_page_path(voice),
        evaluation_path(voice),
        f"{PATHS['eval_dir']}/{voice}/listen.html",
        f"{PATHS['eval_dir']}/{voice}/pieces",
    ]


def voice_files():
    return [
        VoiceFiles(
            v,
            source_path(v),
            preflight_marker(v),
            manifest_path(v),
            status=status_path(v),
            status_mirror=f"{state_dir(v)}/train_status.json",
            checkpoint_file=checkpoint_path(v),
            samples=tuple(sample_paths(v)),
            evaluation=evaluation_path(v),
        )
        for v in VOICES
    ]


def print_report():
    report_file = Path(PATHS["report"])
    if report_file.exists():
        print(f"\n{report_file.read_text(encoding='utf-8')}", end="")


def report_failure(snakemake_log):
    """Write and print the report block for a failed run (from the onerror handler)."""
    text = build_report(voice_files(), Path.cwd(), parse_failure(snakemake_log, VOICES))
    write_report(PATHS["report"], text)
    print(f"\n{text}", end="")


def refuse_jobs_no_node_can_run():
    """With the slurm executor, stop before the first submission if a job could never start (Slurm
    would keep it pending forever; see voice_train.cluster). On start: not in dry runs or jobs."""
    if getattr(workflow.executor_plugin, "name", None) != "slurm":
        return
    requests = [request_of(job) for job in workflow.dag.needrun_jobs() if not job.is_local]
    if problems := unrunnable(requests, *cluster_nodes()):
        raise WorkflowError("voice-train cluster: " + "\nvoice-train cluster: ".join(problems))


onstart:
    refuse_jobs_no_node_can_run()


for _voice in VOICES:
    if not source_available(_voice):
        print(
            f"voice-train: voice {_voice}: {source_path(_voice)} does not exist; "
            "preflight will fail until the recording is there",
            file=sys.stderr,
        )
