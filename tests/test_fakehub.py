"""The real model path, offline: ``facebook/musicgen-small`` with its T5 and its codec.

Each form of the fake Hugging Face cache (:mod:`fakehub`: the codec's weights in the model, or a
pointer to ``facebook/encodec_32khz``) is built once, then probed by a fresh Python process with
``HF_HOME`` and ``HF_HUB_OFFLINE=1`` set before huggingface_hub is imported and with every
network connection refused. The probe makes the calls a user makes after downloading and prints
what it saw as JSON; the tests read that report. Both probes run at the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakehub import CODEC_FORMS, MUSICGEN, build_fake_hub

ROOT = Path(__file__).resolve().parents[1]
# audiocraft's EnCodec, built by the fake hub, uses torch's older weight_norm.
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
MISSING = "facebook/musicgen-medium"

# Runs in the probe process. The socket patches come first, before anything can connect.
PROBE = r"""
import socket

NETWORK = []


def refuse(what):
    def refused(*args, **kwargs):
        NETWORK.append(what)
        raise ConnectionRefusedError(f"{what} in an offline test")

    return refused


socket.socket.connect = refuse("socket.connect")
socket.socket.connect_ex = refuse("socket.connect_ex")
socket.getaddrinfo = refuse("socket.getaddrinfo")

import json
import random
import sys
import time
import traceback

sys.path.insert(0, "scripts")
from voice_train import compat

compat.setup_audiocraft("torch")
import torch
from audiocraft.models import MusicGen, loaders
from voice_train import presets

REPO, MISSING = sys.argv[1], sys.argv[2]
report, models = {}, {}


def step(name, check):
    start = time.monotonic()
    try:
        report[name] = check()
    except BaseException:
        report[name] = {"error": traceback.format_exc()}
    report[name]["seconds"] = round(time.monotonic() - start, 2)


def kind(obj):
    return f"{type(obj).__module__}.{type(obj).__name__}"


def musicgen():
    model = models["musicgen"] = MusicGen.get_pretrained(REPO, device="cpu")
    lm, codec = model.lm, model.compression_model
    conditioner = lm.condition_provider.conditioners["description"]
    t5 = conditioner.__dict__["t5"]
    model.set_generation_params(duration=0.5)
    torch.manual_seed(0)
    audio = model.generate(["a voice"])
    return {
        "conditioner": kind(conditioner),
        "t5_name": conditioner.name,
        "t5": {
            "kind": kind(t5),
            "device": str(next(t5.parameters()).device),
            "dtype": str(next(t5.parameters()).dtype),
            "training": t5.training,
            "is_submodule": any(module is t5 for module in lm.modules()),
        },
        "tokenizer": kind(conditioner.t5_tokenizer),
        "word_dropout": conditioner.word_dropout,
        "fuser_cross": list(lm.fuser.fuse2cond["cross"]),
        "cross_attention_layers": sum(layer.cross_attention is not None for layer in lm.transformer.layers),
        "layers": len(lm.transformer.layers),
        "codec": kind(codec),
        "sample_rate": codec.sample_rate,
        "frame_rate": float(codec.frame_rate),
        "num_codebooks": int(codec.num_codebooks),
        "cardinality": int(codec.cardinality),
        "audio_shape": list(audio.shape),
        "model_sample_rate": model.sample_rate,
    }


def encode():
    codec = models["musicgen"].compression_model
    torch.manual_seed(1)
    with torch.no_grad():
        codes, scale = codec.encode(torch.randn(1, 1, codec.sample_rate) * 0.1)
    return {
        "shape": list(codes.shape),
        "scale": None if scale is None else list(scale.shape),
        "distinct_per_codebook": [len(torch.unique(row)) for row in codes[0]],
        "max_code": int(codes.max()),
    }


def word_dropout():
    conditioner = models["musicgen"].lm.condition_provider.conditioners["description"]
    text = ["a warm low voice reading a story aloud in a quiet room with a little reverb"]
    lengths = {}
    for mode in ("eval", "train"):
        conditioner.train(mode == "train")
        random.seed(0)
        lengths[mode] = int(conditioner.tokenize(text)["attention_mask"].sum())
    conditioner.eval()
    return {"tokens": lengths}


def audiocraft_loaders():
    lm = loaders.load_lm_model(REPO, device="cpu")
    codec = loaders.load_compression_model(REPO, device="cpu")
    return {
        "lm": kind(lm),
        "conditioner": kind(lm.condition_provider.conditioners["description"]),
        "codec": kind(codec),
        "frame_rate": float(codec.frame_rate),
    }


def project_loaders():
    lm_file, codec_file = presets.model_files(REPO)
    lm = presets.load_lm(REPO)
    codec = presets.load_compression(REPO)
    return {
        "files": [lm_file, codec_file],
        "lm": kind(lm),
        "lm_dtype": str(next(lm.parameters()).dtype),
        "codec": kind(codec),
        "num_codebooks": int(codec.num_codebooks),
    }


def missing():
    result = {}
    for name, call in (
        ("presets.model_files", lambda: presets.model_files(MISSING)),
        ("MusicGen.get_pretrained", lambda: MusicGen.get_pretrained(MISSING, device="cpu")),
    ):
        start = time.monotonic()
        try:
            call()
            result[name] = {"error": None}
        except Exception as exc:
            result[name] = {"error": kind(exc), "message": str(exc).splitlines()[0]}
        result[name]["seconds"] = round(time.monotonic() - start, 2)
    return result


for name, check in [
    ("musicgen", musicgen),
    ("encode", encode),
    ("word_dropout", word_dropout),
    ("audiocraft_loaders", audiocraft_loaders),
    ("project_loaders", project_loaders),
    ("missing", missing),
]:
    step(name, check)
report["network"] = NETWORK
print(json.dumps(report))
"""

# Variables that would send huggingface_hub or audiocraft to another cache than HF_HOME's.
OTHER_CACHES = ("AUDIOCRAFT_CACHE_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")


def start_probe(env: dict[str, str]) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in OTHER_CACHES}
    # One thread: tiny models run fastest so, and two probes share the CPUs.
    environ.update(env, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, MUSICGEN, MISSING],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Each form's cache, built once, and its probe process, started as soon as its cache is built."""
    started = {}
    try:
        for form in CODEC_FORMS:
            hub = build_fake_hub(tmp_path_factory.mktemp(f"hf-{form}"), codec=form, seed=0)
            started[form] = (hub, start_probe(hub["env"]))
        yield started
    finally:
        for _, process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module", params=CODEC_FORMS)
def probe(request, probes) -> tuple[dict, dict]:
    """(the fake hub, the probe's report) for one form of the cache."""
    hub, process = probes[request.param]
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the probe did not finish within 10 minutes")
    if process.returncode != 0 or not stdout.strip():
        pytest.fail(f"the probe failed (exit {process.returncode}):\n{stderr[-5000:]}")
    return hub, json.loads(stdout.strip().splitlines()[-1])


def result(report: dict, name: str) -> dict:
    """One step's results; fails with the probe's traceback if that step raised."""
    step = report[name]
    assert "error" not in step, f"{name} raised in the probe:\n{step['error']}"
    return step


def test_musicgen_small_loads_with_its_t5_conditioner(probe):
    _, report = probe
    model = result(report, "musicgen")
    assert model["conditioner"] == "audiocraft.modules.conditioners.T5Conditioner"
    assert model["t5_name"] == "t5-base" and model["word_dropout"] == 0.3
    assert model["tokenizer"] == "transformers.models.t5.tokenization_t5.T5Tokenizer"
    assert model["fuser_cross"] == ["description"]
    assert model["cross_attention_layers"] == model["layers"] > 0
    # Kept out of the LM's modules (so out of its state dict), on the device it was built for.
    t5 = model["t5"]
    assert t5["kind"] == "transformers.models.t5.modeling_t5.T5EncoderModel"
    assert t5["device"] == "cpu" and t5["dtype"] == "torch.float32"
    assert not t5["training"] and not t5["is_submodule"]


def test_its_codec_has_musicgen_small_s_rates(probe):
    hub, report = probe
    model = result(report, "musicgen")
    # The pointer form's codec is transformers' EncodecModel, wrapped by audiocraft.
    wrapper = {"weights": "EncodecModel", "pointer": "HFEncodecCompressionModel"}[hub["codec"]]
    assert model["codec"] == f"audiocraft.models.encodec.{wrapper}"
    rates = (model["sample_rate"], model["frame_rate"], model["num_codebooks"], model["cardinality"])
    assert rates == (32000, 50, 4, 2048)


def test_it_generates_half_a_second(probe):
    _, report = probe
    model = result(report, "musicgen")
    assert model["model_sample_rate"] == 32000
    batch, channels, samples = model["audio_shape"]
    assert (batch, channels) == (1, 1) and abs(samples - 16000) <= 640  # within a frame of 0.5 s


def test_one_second_encodes_to_50_frames_of_4_varied_codes(probe):
    _, report = probe
    encoded = result(report, "encode")
    assert encoded["shape"] == [1, 4, 50] and encoded["scale"] is None
    assert encoded["max_code"] < 2048
    assert min(encoded["distinct_per_codebook"]) > 5, encoded  # every codebook is initialised


def test_word_dropout_acts_in_training_mode_only(probe):
    _, report = probe
    tokens = result(report, "word_dropout")["tokens"]
    assert tokens["train"] < tokens["eval"]


def test_audiocraft_loaders_load_it(probe):
    _, report = probe
    loaded = result(report, "audiocraft_loaders")
    assert loaded["lm"] == "audiocraft.models.lm.LMModel"
    assert loaded["conditioner"] == "audiocraft.modules.conditioners.T5Conditioner"
    assert loaded["codec"].startswith("audiocraft.models.encodec.") and loaded["frame_rate"] == 50


def test_the_project_loaders_load_it_from_the_cache(probe):
    hub, report = probe
    loaded = result(report, "project_loaders")
    snapshot = hub["snapshots"][MUSICGEN]
    assert loaded["files"] == [str(snapshot / "state_dict.bin"), str(snapshot / "compression_state_dict.bin")]
    assert loaded["lm"] == "audiocraft.models.lm.LMModel" and loaded["lm_dtype"] == "torch.float32"
    assert loaded["codec"].startswith("audiocraft.models.encodec.") and loaded["num_codebooks"] == 4


def test_a_model_missing_from_the_cache_fails_fast(probe):
    _, report = probe
    missing = result(report, "missing")
    project = missing["presets.model_files"]
    assert project["error"] == "voice_train.errors.VoiceTrainError"
    assert project["message"].startswith(f"{MISSING}/state_dict.bin: model weights are neither")
    assert "HF_HUB_OFFLINE" in project["message"]
    assert missing["MusicGen.get_pretrained"]["error"] is not None
    assert max(project["seconds"], missing["MusicGen.get_pretrained"]["seconds"]) < 5  # no retries


def test_nothing_tried_the_network(probe):
    _, report = probe
    assert report["network"] == []
