"""Install the workflow's packages into one Python interpreter without moving what fits.

The pinned sets live in ``requirements.txt`` (the light set) and ``requirements-train.txt``
(the model rules), one ``name==pin  # accept: <range>`` per line. A package installed
within its range is kept (Colab's CUDA torch stays as it is); one missing or outside its
range gets its pin. torchaudio follows torch's release exactly, since each torchaudio build
loads only with its own torch. pip runs with a constraints file that holds every kept package at its
installed version and refuses xformers; audiocraft and resemblyzer then go in with ``--no-deps``
(audiocraft's metadata pins torch 2.1 and xformers; resemblyzer's asks for webrtcvad, built from
source, where requirements-train.txt has the prebuilt webrtcvad-wheels, and the old ``typing``
backport).

Only the standard library is imported at import time: this runs before any dependency is
installed. Version ranges use ``packaging``, or pip's vendored copy of it.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import VoiceTrainError

REQUIREMENT_FILES = ("requirements.txt", "requirements-train.txt")
AUDIOCRAFT_VERSION = "1.3.0"
RESEMBLYZER_VERSION = "0.1.4"
# Installed after the set, with --no-deps: their metadata asks for what must not come in.
NO_DEPS = {"audiocraft": AUDIOCRAFT_VERSION, "resemblyzer": RESEMBLYZER_VERSION}
MIN_PYTHON = (3, 11)
# No release is below 0, so pip's resolver fails rather than install xformers for anyone.
NO_XFORMERS = "xformers<0"
PIP_FIX = "install pip for this Python (Debian/Ubuntu: apt install python3-pip, or python3-venv for a venv)"

_LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<pin>\S+)\s+#\s*accept:\s*(?P<accept>\S.*?)\s*$"
)

# Runs in the target interpreter: its Python version and every installed distribution.
_PROBE = r"""
import importlib.metadata, json, re, sys
packages = {}
for dist in importlib.metadata.distributions():
    name, version = dist.metadata.get("Name"), dist.version
    if name and version:
        packages.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
print(json.dumps({"python": list(sys.version_info[:3]), "packages": packages}))
"""

# Runs in the target interpreter after installing: audiocraft imports with our xformers stand-in.
_SMOKE = """
import sys
sys.path.insert(0, {scripts!r})
from voice_train.compat import setup_audiocraft
setup_audiocraft("torch")
import audiocraft.models
import resemblyzer
"""


def canonical_name(name: str) -> str:
    """The name pip and importlib.metadata agree on (PEP 503): ``PyYAML`` -> ``pyyaml``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _packaging():
    try:
        from packaging import specifiers, version
    except ImportError:
        try:
            from pip._vendor.packaging import specifiers, version
        except ImportError:
            raise VoiceTrainError(
                sys.executable, "neither packaging nor pip is importable here", PIP_FIX
            ) from None
    return specifiers, version


def _parse_version(text: str):
    _, version = _packaging()
    try:
        return version.Version(text)
    except version.InvalidVersion:
        return None


def in_range(version_text: str, specifier: str) -> bool:
    """True when ``version_text`` is a valid version inside ``specifier`` (pre-releases count)."""
    specifiers, _ = _packaging()
    parsed = _parse_version(version_text)
    return parsed is not None and specifiers.SpecifierSet(specifier).contains(parsed, prereleases=True)


def base_version(version_text: str) -> str | None:
    """The release alone: ``"2.8.0+cu126"`` -> ``"2.8.0"``; None for a version that does not parse."""
    parsed = _parse_version(version_text)
    return None if parsed is None else parsed.base_version


def same_release(a: str, b: str) -> bool:
    """True when both parse and name the same release (``2.8`` and ``2.8.0+cu126`` do)."""
    release_a, release_b = base_version(a), base_version(b)
    return (
        release_a is not None
        and release_b is not None
        and _parse_version(release_a) == _parse_version(release_b)
    )


@dataclass(frozen=True)
class Requirement:
    """One ``name==pin  # accept: <range>`` line."""

    name: str
    pin: str
    accept: str
    where: str

    @property
    def key(self) -> str:
        return canonical_name(self.name)


def read_requirements(path: Path) -> list[Requirement]:
    """The requirement lines of one file; blank lines, comments and ``-r`` lines are skipped.

    Raises VoiceTrainError for a line in another form, a range that does not parse or a pin
    outside its own range.
    """
    specifiers, _ = _packaging()
    found = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "-r")):
            continue
        where = f"{path}:{number}"
        match = _LINE.match(line)
        if match is None:
            raise VoiceTrainError(
                where,
                f"{line!r} is not 'name==pin  # accept: <range>'",
                "pin the package and add the versions the workflow accepts, "
                "e.g. 'torch==2.9.1  # accept: >=2.6,<3'",
            )
        requirement = Requirement(where=where, **match.groupdict())
        try:
            specifiers.SpecifierSet(requirement.accept)
        except specifiers.InvalidSpecifier:
            raise VoiceTrainError(
                where, f"accept range {requirement.accept!r} does not parse", "write it like '>=2.6,<3'"
            ) from None
        if not in_range(requirement.pin, requirement.accept):
            raise VoiceTrainError(
                where,
                f"pin {requirement.pin} is outside its accept range {requirement.accept}",
                "make the range include the pin",
            )
        found.append(requirement)
    return found


def load_requirements(root: Path) -> list[Requirement]:
    """Every requirement of the workflow's set (the light set, then the training set)."""
    requirements: list[Requirement] = []
    for filename in REQUIREMENT_FILES:
        requirements += read_requirements(Path(root) / filename)
    seen: dict[str, Requirement] = {}
    for requirement in requirements:
        if requirement.key in seen:
            raise VoiceTrainError(
                requirement.where,
                f"{requirement.name} is already required at {seen[requirement.key].where}",
                "keep one line per package",
            )
        seen[requirement.key] = requirement
    return requirements


@dataclass(frozen=True)
class Step:
    """What happens to one requirement: keep the installed version, or install ``wanted``."""

    requirement: Requirement
    installed: str | None
    wanted: str | None  # a version specifier such as "==2.9.1" or "==2.8.*"; None keeps
    why: str

    @property
    def keep(self) -> bool:
        return self.wanted is None

    @property
    def spec(self) -> str | None:
        """What pip is asked for, e.g. ``torchaudio==2.8.*``."""
        return None if self.keep else f"{self.requirement.name}{self.wanted}"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    audiocraft_installed: str | None
    xformers_installed: str | None
    resemblyzer_installed: str | None = None

    def no_deps_installed(self) -> dict[str, str | None]:
        """The installed version of each ``NO_DEPS`` package (None: missing)."""
        return {"audiocraft": self.audiocraft_installed, "resemblyzer": self.resemblyzer_installed}

    @property
    def no_deps_specs(self) -> list[str]:
        """The ``NO_DEPS`` packages to install (missing or another version): ``name==version``."""
        installed = self.no_deps_installed()
        return [
            f"{name}=={version}"
            for name, version in NO_DEPS.items()
            if installed[name] is None or not in_range(installed[name], f"=={version}")
        ]

    @property
    def kept(self) -> list[Step]:
        return [step for step in self.steps if step.keep]

    @property
    def install_specs(self) -> list[str]:
        return [step.spec for step in self.steps if not step.keep]

    @property
    def needs_audiocraft(self) -> bool:
        return f"audiocraft=={AUDIOCRAFT_VERSION}" in self.no_deps_specs

    def constraints(self) -> str:
        """pip constraints: every kept package at its installed version, and no new xformers."""
        lines = [f"{step.requirement.name}=={step.installed}" for step in self.kept]
        lines.append(f"xformers=={self.xformers_installed}" if self.xformers_installed else NO_XFORMERS)
        return "\n".join(lines) + "\n"


def _decide(requirement: Requirement, installed: str | None) -> Step:
    pin = f"=={requirement.pin}"
    if installed is None:
        return Step(requirement, None, pin, "not installed")
    if in_range(installed, requirement.accept):
        return Step(requirement, installed, None, f"within {requirement.accept}")
    return Step(requirement, installed, pin, f"{installed} is outside {requirement.accept}")


def _decide_torchaudio(requirement: Requirement, installed: str | None, torch: Step) -> Step:
    # torchaudio's metadata does not pin torch, yet its compiled library loads only with the
    # torch of its own release (torchaudio 2.11.1 fails on torch 2.11.0): pair them exactly.
    torch_version = torch.installed if torch.keep else torch.requirement.pin
    if installed and in_range(installed, requirement.accept) and same_release(installed, torch_version):
        return Step(requirement, installed, None, f"matches torch {torch_version}")
    return Step(requirement, installed, f"=={base_version(torch_version)}", f"to match torch {torch_version}")


def plan_install(requirements: Iterable[Requirement], installed: Mapping[str, str]) -> Plan:
    """Decide, per requirement, to keep the installed version or to install one.

    ``installed`` maps canonical names to installed versions. A version within the accept
    range is kept; anything else gets the pin. torchaudio is kept only when it is of the same
    release as the torch that stays or arrives; otherwise ``torchaudio==<that release>`` is
    installed (``torchaudio==2.8.0`` beside Colab's ``torch 2.8.0+cu126``).
    """
    requirements = list(requirements)
    by_key = {requirement.key: requirement for requirement in requirements}
    steps = {key: _decide(requirement, installed.get(key)) for key, requirement in by_key.items()}
    if "torch" in steps and "torchaudio" in steps:
        steps["torchaudio"] = _decide_torchaudio(
            by_key["torchaudio"], installed.get("torchaudio"), steps["torch"]
        )
    return Plan(
        steps=tuple(steps[requirement.key] for requirement in requirements),
        audiocraft_installed=installed.get("audiocraft"),
        xformers_installed=installed.get("xformers"),
        resemblyzer_installed=installed.get("resemblyzer"),
    )


def check_installed(plan: Plan, installed: Mapping[str, str]) -> list[str]:
    """What differs from the plan after installing (empty when all is as planned)."""
    problems = []
    for step in plan.steps:
        now = installed.get(step.requirement.key)
        name = step.requirement.name
        if step.keep and now != step.installed:
            problems.append(f"{name} moved from {step.installed} to {now}")
        elif not step.keep and (now is None or not in_range(now, step.wanted)):
            problems.append(f"{name} is {now or 'missing'}, not {step.spec}")
    for name, version in NO_DEPS.items():
        now = installed.get(name)
        if now is None or not in_range(now, f"=={version}"):
            problems.append(f"{name} is {now or 'missing'}, not {version}")
    if plan.xformers_installed is None and "xformers" in installed:
        problems.append(f"xformers {installed['xformers']} got installed")
    return problems


def describe(plan: Plan) -> list[str]:
    """The plan, one readable line per package."""
    width = max(len(step.requirement.name) for step in plan.steps) + 2
    lines = []
    for step in plan.steps:
        if step.keep:
            lines.append(f"  keep     {step.requirement.name:<{width}}{step.installed}")
        else:
            lines.append(f"  install  {step.spec:<{width + 10}}({step.why})")
    for name, installed in plan.no_deps_installed().items():
        spec = f"{name}=={NO_DEPS[name]}"
        if spec in plan.no_deps_specs:
            lines.append(f"  install  {spec:<{width + 10}}(--no-deps)")
        else:
            lines.append(f"  keep     {name:<{width}}{installed}")
    return lines


def pip_commands(python: str, plan: Plan, constraints: Path) -> list[list[str]]:
    """The pip runs that carry out ``plan``: the set under constraints, then the ``NO_DEPS``
    packages without their dependencies."""
    commands = []
    if plan.install_specs:
        commands.append([python, "-m", "pip", "install", *plan.install_specs, "-c", str(constraints)])
    if plan.no_deps_specs:
        commands.append([python, "-m", "pip", "install", "--no-deps", *plan.no_deps_specs])
    return commands


def probe(python: str) -> dict:
    """The target interpreter's Python version and installed distributions (canonical names)."""
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True)
    except OSError as exc:
        raise VoiceTrainError(
            python, f"cannot run it ({exc.strerror})", "pass --python the path of a Python 3.11+ interpreter"
        ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VoiceTrainError(
            python,
            f"cannot list its packages ({last})",
            "pass --python the path of a Python 3.11+ interpreter",
        )
    return json.loads(proc.stdout)


def pip_version(python: str) -> str | None:
    """pip's version in the target interpreter, or None when it has no pip."""
    proc = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.startswith("pip "):
        return None
    return proc.stdout.split()[1]


def ensure_pip(python: str) -> str:
    """pip's version, after ``python -m ensurepip --upgrade`` when pip is missing."""
    version = pip_version(python)
    if version is None:
        subprocess.run([python, "-m", "ensurepip", "--upgrade"])
        importlib.invalidate_caches()  # so that pip._vendor.packaging imports if python is this one
        version = pip_version(python)
    if version is None:
        raise VoiceTrainError(
            python, "has no pip, and `python -m ensurepip --upgrade` could not add it", PIP_FIX
        )
    return version


def smoke_check(python: str, scripts: Path) -> None:
    """``import audiocraft.models`` and ``import resemblyzer`` in the target, with our xformers
    stand-in registered."""
    proc = subprocess.run([python, "-c", _SMOKE.format(scripts=str(scripts))], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VoiceTrainError(
            python,
            f"`import audiocraft.models, resemblyzer` fails after installing: {last}",
            "see the traceback above",
        )


def _run_pip(command: list[str]) -> None:
    code = subprocess.run(command).returncode
    if code != 0:
        raise VoiceTrainError(
            command[0],
            f"`{shlex.join(['python', *command[1:]])}` failed with exit code {code}",
            "read pip's message above (packages marked 'keep' are held at their installed versions)",
        )


def _say(line: str) -> None:
    print(line, flush=True)  # before pip's own output, also when stdout is a pipe


def install(root: Path, python: str, dry_run: bool = False, say: Callable[[str], None] = _say) -> Plan:
    """Install the workflow's set and audiocraft into ``python``; returns the plan it followed.

    With ``dry_run`` nothing is run that changes the interpreter: the plan and the pip
    commands are printed. Raises VoiceTrainError (one line) when something fails.
    """
    started = time.monotonic()
    target = probe(python)
    version = ".".join(map(str, target["python"]))
    if tuple(target["python"][:2]) < MIN_PYTHON:
        raise VoiceTrainError(
            python, f"is Python {version}; the workflow needs 3.11+", "use Python 3.11 or 3.12"
        )
    pip = pip_version(python) if dry_run else ensure_pip(python)
    say(f"voice-train install: {python} (Python {version}, pip {pip or 'missing'})")
    if pip is None:
        say(f"would run: {shlex.join([python, '-m', 'ensurepip', '--upgrade'])}")

    # After ensure_pip: where packaging is missing, pip's vendored copy is what reads the ranges.
    plan = plan_install(load_requirements(root), target["packages"])
    for line in describe(plan):
        say(line)
    with tempfile.TemporaryDirectory(prefix="voice-train-install-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(plan.constraints())
        commands = pip_commands(python, plan, constraints)
        if dry_run:
            for command in commands:
                say(f"would run: {shlex.join(command)}")
            if plan.install_specs:
                say(f"with {constraints.name}: {' '.join(plan.constraints().split())}")
            to_install = len(plan.install_specs) + len(plan.no_deps_specs)
            say(f"dry run: {len(plan.kept)} to keep, {to_install} to install; nothing changed")
            return plan
        for command in commands:
            say(f"running: {shlex.join(command)}")
            _run_pip(command)
    if plan.install_specs and (plan.audiocraft_installed or plan.resemblyzer_installed):
        say("(pip's complaints about audiocraft's or resemblyzer's own requirements are expected: --no-deps)")

    problems = check_installed(plan, probe(python)["packages"])
    if problems:
        raise VoiceTrainError(python, "after pip, " + "; ".join(problems), "read pip's output above")
    smoke_check(python, Path(root) / "scripts")
    installed = len(plan.install_specs) + len(plan.no_deps_specs)
    say(
        f"voice-train install: done in {time.monotonic() - started:.0f} s; kept {len(plan.kept)}, "
        f"installed {installed}; audiocraft {AUDIOCRAFT_VERSION} (torch attention) and resemblyzer import"
    )
    return plan
