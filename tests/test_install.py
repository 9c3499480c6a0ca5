"""The installer's plan on made-up environments, and the pinned sets that must not drift apart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voice_train.errors import VoiceTrainError
from voice_train.install import (
    AUDIOCRAFT_VERSION,
    NO_DEPS,
    NO_XFORMERS,
    RESEMBLYZER_VERSION,
    canonical_name,
    check_installed,
    in_range,
    load_requirements,
    pip_commands,
    plan_install,
    read_requirements,
)

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
REQUIREMENTS = load_requirements(ROOT)
PINS = {r.key: r.pin for r in REQUIREMENTS}
LIGHT = {r.key: r.pin for r in read_requirements(ROOT / "requirements.txt")}
TRAIN = {r.key: r.pin for r in read_requirements(ROOT / "requirements-train.txt")}


def colab(**changes: str | None) -> dict[str, str]:
    """Installed versions like Colab's: the pins, a CUDA torch 2.8 and no torchaudio, plus changes."""
    installed = dict(PINS, torch="2.8.0+cu126", pip="24.1.2")
    del installed["torchaudio"]
    for name, version in changes.items():
        if version is None:
            installed.pop(name, None)
        else:
            installed[name] = version
    return installed


def steps_by_name(plan):
    return {step.requirement.key: step for step in plan.steps}


def test_fresh_venv_gets_every_pin_and_audiocraft():
    plan = plan_install(REQUIREMENTS, {"pip": "23.2.1"})
    assert plan.install_specs == [f"{r.name}=={r.pin}" for r in REQUIREMENTS]
    assert plan.kept == []
    assert plan.needs_audiocraft
    assert plan.constraints().splitlines() == [NO_XFORMERS]


def test_everything_in_place_is_kept():
    plan = plan_install(REQUIREMENTS, dict(PINS, audiocraft=AUDIOCRAFT_VERSION))
    assert plan.install_specs == []
    assert not plan.needs_audiocraft
    assert len(plan.kept) == len(REQUIREMENTS)


def test_colab_torch_stays_and_torchaudio_follows_its_release():
    plan = plan_install(REQUIREMENTS, colab())
    steps = steps_by_name(plan)
    assert steps["torch"].keep and steps["torch"].installed == "2.8.0+cu126"
    assert plan.install_specs == ["torchaudio==2.8.0"]
    constraints = plan.constraints().splitlines()
    assert "torch==2.8.0+cu126" in constraints
    assert "numpy==2.4.6" in constraints
    assert NO_XFORMERS in constraints
    assert not any(line.startswith("torchaudio") for line in constraints)


@pytest.mark.parametrize("torchaudio", ["2.9.1", "2.8.1"])
def test_torchaudio_of_another_release_than_torch_is_replaced(torchaudio):
    # torchaudio 2.11.1 beside torch 2.11.0 fails to load its library: a patch apart is too far.
    plan = plan_install(REQUIREMENTS, colab(torchaudio=torchaudio))
    assert plan.install_specs == ["torchaudio==2.8.0"]


def test_torchaudio_matching_colab_torch_is_kept():
    plan = plan_install(REQUIREMENTS, colab(torchaudio="2.8.0+cu126"))
    assert plan.install_specs == []
    assert "torchaudio==2.8.0+cu126" in plan.constraints().splitlines()


@pytest.mark.parametrize("torch", ["2.5.1+cu121", "2.12.0+cu130"])
def test_torch_outside_its_range_gets_the_pinned_pair(torch):
    # torch 2.12 and later have no torchaudio of their own release on PyPI.
    plan = plan_install(REQUIREMENTS, colab(torch=torch, torchaudio=torch))
    assert plan.install_specs == [f"torch=={PINS['torch']}", f"torchaudio=={PINS['torchaudio']}"]


def test_numpy_outside_its_range_gets_the_pin_and_the_rest_stays():
    plan = plan_install(REQUIREMENTS, dict(PINS, numpy="1.26.4", audiocraft=AUDIOCRAFT_VERSION))
    assert plan.install_specs == [f"numpy=={PINS['numpy']}"]
    assert "1.26.4 is outside" in steps_by_name(plan)["numpy"].why
    constraints = plan.constraints().splitlines()
    assert f"torch=={PINS['torch']}" in constraints
    assert not any(line.startswith("numpy") for line in constraints)


def test_an_installed_xformers_is_held_not_blocked():
    plan = plan_install(REQUIREMENTS, colab(xformers="0.0.28.post1"))
    constraints = plan.constraints().splitlines()
    assert "xformers==0.0.28.post1" in constraints
    assert NO_XFORMERS not in constraints


def test_unparsable_installed_version_is_replaced():
    plan = plan_install(REQUIREMENTS, dict(PINS, scipy="not-a-version"))
    assert plan.install_specs == [f"scipy=={PINS['scipy']}"]


def test_check_after_install_names_what_moved():
    plan = plan_install(REQUIREMENTS, colab())
    after = colab(torch="2.9.1", torchaudio="2.9.1", xformers="0.0.33", audiocraft=AUDIOCRAFT_VERSION)
    problems = check_installed(plan, after)
    assert "torch moved from 2.8.0+cu126 to 2.9.1" in problems
    assert "torchaudio is 2.9.1, not torchaudio==2.8.0" in problems
    assert "xformers 0.0.33 got installed" in problems
    good = colab(torchaudio="2.8.0", audiocraft=AUDIOCRAFT_VERSION, resemblyzer=RESEMBLYZER_VERSION)
    assert check_installed(plan, good) == []


def test_the_pip_constraint_refuses_every_xformers():
    assert not any(in_range(v, NO_XFORMERS.removeprefix("xformers")) for v in ("0", "0.0.1", "0.0.28.post1"))


@pytest.mark.parametrize(
    "line",
    [
        "numpy==2.4.6",
        "numpy>=2  # accept: >=2,<3",
        "numpy==2.4.6  # accept: >=3",
        "numpy==2.4.6  # accept: ~~2",
    ],
)
def test_a_line_without_a_sound_accept_range_is_refused(tmp_path, line):
    path = tmp_path / "requirements.txt"
    path.write_text(f"# comment\n-r other.txt\n{line}\n")
    with pytest.raises(VoiceTrainError, match=r"requirements.txt:3"):
        read_requirements(path)


# The pinned sets themselves.


def test_every_requirement_line_has_an_accept_range_holding_its_pin():
    for filename in ("requirements.txt", "requirements-train.txt"):
        lines = [
            line
            for line in (ROOT / filename).read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-r"))
        ]
        assert len(read_requirements(ROOT / filename)) == len(lines), filename
    for requirement in REQUIREMENTS:
        assert in_range(requirement.pin, requirement.accept), requirement


def test_torchaudio_pin_pairs_with_torch_pin():
    assert PINS["torch"] == PINS["torchaudio"]


@pytest.mark.parametrize("name", ["requirements-dev.txt", "requirements-slurm.txt"])
def test_dev_requirements_are_exact_pins(name):
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith(("#", "-r")):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line), line


def env_file(name: str) -> tuple[list[str], dict[str, str]]:
    """An env file's conda dependencies and its pip section as {canonical name: pin}."""
    dependencies = yaml.safe_load((ENVS / name).read_text())["dependencies"]
    conda = [d for d in dependencies if isinstance(d, str)]
    pip_lines = next(d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d)
    pip = {}
    for line in pip_lines:
        package, _, pin = line.partition("==")
        assert pin, f"envs/{name}: {line!r} is not pinned with =="
        pip[canonical_name(package)] = pin
    return conda, pip


def test_audio_env_has_the_light_set_without_snakemake():
    _, pip = env_file("audio.yaml")
    assert pip == {k: v for k, v in LIGHT.items() if k != "snakemake"}


def test_train_env_has_the_light_and_training_sets_without_snakemake():
    _, pip = env_file("train.yaml")
    assert pip == {**{k: v for k, v in LIGHT.items() if k != "snakemake"}, **TRAIN}


@pytest.mark.parametrize("name", ["audio.yaml", "train.yaml"])
def test_env_files_use_python_312(name):
    conda, _ = env_file(name)
    assert "python=3.12" in conda


def test_no_xformers_is_required_anywhere():
    names = {
        canonical_name(re.split(r"[=<>!~ ]", d)[0]) for f in ENVS.glob("*.yaml") for d in env_file(f.name)[0]
    }
    names |= {k for f in ENVS.glob("*.yaml") for k in env_file(f.name)[1]}
    for path in ROOT.glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith(("#", "-r")):
                names.add(canonical_name(re.split(r"[=<>!~ ;\[]", line)[0]))
    assert "pip" in names and "torch" in names, "the scan found the requirements"
    assert "xformers" not in names


def test_post_deploy_installs_the_installers_audiocraft_and_resemblyzer():
    script = (ENVS / "train.post-deploy.sh").read_text()
    assert re.findall(r"audiocraft==(\S+)", script) == [AUDIOCRAFT_VERSION]
    assert re.findall(r"resemblyzer==(\S+)", script) == [RESEMBLYZER_VERSION]
    assert script.count("--no-deps") == 2


def test_resemblyzer_goes_in_without_its_deps_and_stays_when_it_fits(tmp_path):
    fresh = plan_install(REQUIREMENTS, {"pip": "23.2.1"})
    commands = pip_commands("python", fresh, tmp_path / "c.txt")
    assert commands[-1][-4:] == [
        "install",
        "--no-deps",
        f"audiocraft=={AUDIOCRAFT_VERSION}",
        f"resemblyzer=={RESEMBLYZER_VERSION}",
    ]
    only = plan_install(REQUIREMENTS, dict(PINS, audiocraft=AUDIOCRAFT_VERSION))
    assert only.no_deps_specs == [f"resemblyzer=={RESEMBLYZER_VERSION}"] and not only.needs_audiocraft
    done = plan_install(
        REQUIREMENTS, dict(PINS, audiocraft=AUDIOCRAFT_VERSION, resemblyzer=RESEMBLYZER_VERSION)
    )
    assert done.no_deps_specs == [] and pip_commands("python", done, tmp_path / "c.txt") == []
    assert "resemblyzer is missing, not 0.1.4" in check_installed(
        only, dict(PINS, audiocraft=AUDIOCRAFT_VERSION)
    )


# The command line, in this test run's own interpreter.


def test_installer_imports_nothing_beyond_the_standard_library():
    code = (
        "import sys; sys.path.insert(0, 'scripts'); before = set(sys.modules); import voice_train.install; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "['voice_train']"


def test_dry_run_in_this_venv_keeps_everything():
    proc = subprocess.run(
        [sys.executable, "scripts/install.py", "--dry-run"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if line.lstrip().startswith(("install ", "would run"))], proc.stdout
    kept = {line.split()[1] for line in lines if line.lstrip().startswith("keep ")}
    assert kept == {r.name for r in REQUIREMENTS} | set(NO_DEPS)
    assert lines[-1].startswith(f"dry run: {len(REQUIREMENTS)} to keep, 0 to install")
