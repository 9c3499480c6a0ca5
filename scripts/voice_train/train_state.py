"""The resume state: saves that are complete or absent, in the state dir (``paths.state_dir/<voice>``).

The real job keeps this on Google Drive, over a mount that uploads as it writes, from a runtime
that can die at any instant. So no save ever rewrites or truncates a file: each is written once,
under a name of its own, into a temporary directory beside it, flushed, fsynced, checked to end
in a whole archive, then renamed into place; older saves are deleted only after the new one is in
place. A kill at any moment leaves the last complete save usable (and a temporary directory that
the next run removes). The files:

* ``resume-<step>.pt``: what continuing needs: the weights at ``<step>``, AdamW's moments, the
  schedule, the gradient scaler, the loss history, the best step so far and the counters.
  ``best_file`` names the weights file of the best step when the best is not ``<step>`` itself.
  One is written every ``train.save_every`` steps, whatever validation does.
* ``weights-<step>.pt``: the weights of one step alone: the best step's (or, without validation
  clips, the last step's), kept so the export is that step after any number of resumes.
* ``finished.pt``: the end: which weights file is the export, the history and the result (no
  weights of its own). Written before the checkpoint; after the checkpoint is in place the resume
  files are deleted, so the finished state is that and one weights file. ``--forcerun train`` or
  a rerun after a kill during the export exports from it without training again.

Before each save the free space is checked against the save's size; a save refused for space or
failed by the disk (a full Drive: ENOSPC; a dropped mount: EIO) raises :class:`SaveFailed`, one
line naming the bytes, and leaves every earlier save as it was.

What a state belongs to (:func:`fingerprint_parts`) is what changes the trained result: the
settings that shape the run (as resolved: ``low_vram`` as the LoRA rank it means, ``auto``
precision as the one it chose), the base weights and the token cache. Library versions, logging
and saving intervals, gradient checkpointing and the device do not discard a state; a state that
differs says which setting differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from .fsutil import is_complete, remove_stale_temps, sha256_file, write_save

STATE_SCHEMA = "voice_train_state/3"
FINISHED_FILE = "finished.pt"
HISTORY_FILE = "loss_history.json"
RUNNING, WEIGHTS, FINISHED = "running", "weights", "finished"
# Left by older versions of the workflow (one state file rewritten in place): they cannot be
# resumed by this version and only take space (up to 5 GB on Drive), so they are removed.
OBSOLETE_FILES = ("best_state.pt", "train_state.pt")
_SAVE_NAME = re.compile(r"^(resume|weights)-(\d{6,})\.pt$")
_REQUIRED = {
    RUNNING: {"parts", "step", "weights", "optimizer", "scheduler", "scaler", "history", "best", "counters"},
    WEIGHTS: {"parts", "step", "weights"},
    FINISHED: {"parts", "step", "weights_file", "history", "best", "counters", "result"},
}
# Settings that do not change the trained weights: a state saved with other values is resumed.
NOT_RESULT_SETTINGS = {
    "eval_every",
    "save_every",
    "log_every",
    "gradient_checkpointing",
    "device",
    "low_vram",
}
_TEMP_NAME = re.compile(r"^\.((resume|weights)-\d{6,}|finished)\.pt\.")  # write_save's temporary dirs


class StateUnreadable(Exception):
    """The disk failed while a save was read (not a torn save): the run stops rather than start clean."""

    def __init__(self, path: Path, exc: OSError):
        self.path = path
        super().__init__(f"{path}: {exc.strerror or exc}")


def resume_name(step: int) -> str:
    return f"resume-{step:06d}.pt"


def weights_name(step: int) -> str:
    return f"weights-{step:06d}.pt"


def fingerprint_parts(settings, precision: str, model_name: str, base_lm_file: str, tokens) -> dict:
    """What a state belongs to, as readable ``{setting: value}``: see the module docstring."""
    run = settings.effective()
    values = {k: v for k, v in asdict(run).items() if k not in NOT_RESULT_SETTINGS}
    if run.lora_rank > 0:
        values.pop("lr")
    else:
        for key in ("lora_lr", "lora_alpha"):
            values.pop(key)
    values["precision"] = precision
    parts = {f"train.{k}": v for k, v in sorted(values.items())}
    parts["model.name"] = model_name
    parts["the base model's weights (sha256)"] = sha256_file(base_lm_file)
    parts["the token cache (sha256)"] = tokens.content_sha256()
    return parts


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def differences(saved: dict, current: dict) -> str:
    """``train.lr 2e-05 (this run: 1e-05)``, for each part that differs (at most three)."""
    keys = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    shown = [f"{k} {_short(saved.get(k))} (this run: {_short(current.get(k))})" for k in keys[:3]]
    return "; ".join(shown) + (f"; and {len(keys) - 3} more" if len(keys) > 3 else "")


def _short(value) -> str:
    text = "unset" if value is None else str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def _load(path: Path, mmap: bool = False):
    import torch

    kwargs = {"mmap": True} if mmap else {}
    return torch.load(path, map_location="cpu", weights_only=True, **kwargs)


class StateStore:
    """The saves of one voice's training, in ``directory``: see the module docstring."""

    def __init__(self, directory: str | os.PathLike, parts: dict, log=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.parts, self.fingerprint = parts, fingerprint(parts)
        self.log = log
        self.foreign: set[str] = set()  # saves read whole but made for other settings or data

    def _say(self, message: str, *args) -> None:
        if self.log is not None:
            self.log.info(message, *args)

    # -- what is on disk ------------------------------------------------------------------------

    def saves(self, kind: str = "resume") -> list[tuple[int, Path]]:
        """The ``resume-*`` (or ``weights-*``) files, newest step first."""
        found = []
        for path in self.dir.iterdir():
            match = _SAVE_NAME.match(path.name)
            if match and match.group(1) == kind:
                found.append((int(match.group(2)), path))
        return sorted(found, reverse=True)

    def remove_leftovers(self) -> list[Path]:
        """Temporary directories of interrupted saves, and what older versions left; removed."""
        removed = []
        for path in list(self.dir.iterdir()):
            if _TEMP_NAME.match(path.name):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
        for name in OBSOLETE_FILES:
            removed += remove_stale_temps(self.dir / name)
            if (self.dir / name).exists():
                (self.dir / name).unlink()
                removed.append(self.dir / name)
        return removed

    def _read(self, path: Path, kind: str) -> tuple[dict | None, str]:
        """The save at ``path`` if it is whole, of ``kind``, of this version and this run; else
        None and why. A disk that fails to read (EIO: a dropped mount) raises :class:`StateUnreadable`
        instead: the save may be fine, and starting clean would throw it away."""
        try:
            if not path.exists() or not is_complete(path):
                return None, f"{path.name} is incomplete (a save cut short)"
            head = _load(path, mmap=True)  # cheap: tensors stay on disk until touched
        except OSError as exc:
            raise StateUnreadable(path, exc) from exc
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: not used
            return None, f"{path.name} is unreadable ({type(exc).__name__})"
        if (
            not isinstance(head, dict)
            or head.get("schema") != STATE_SCHEMA
            or head.get("kind") != kind
            or not _REQUIRED[kind] <= head.keys()
        ):
            return None, f"{path.name} is not a voice-train state of this version"
        if fingerprint(head["parts"]) != self.fingerprint:
            self.foreign.add(path.name)
            return (
                None,
                f"{path.name} (step {head['step']}) was made with {differences(head['parts'], self.parts)}",
            )
        del head
        try:
            return _load(path), ""
        except OSError as exc:
            raise StateUnreadable(path, exc) from exc
        except Exception as exc:  # noqa: BLE001
            return None, f"{path.name} is unreadable ({type(exc).__name__})"

    def load(self) -> tuple[dict | None, str]:
        """The newest usable state (finished first, then resume saves), or None; and why.

        A running state comes back with ``best_weights`` (the best step's weights, or None)."""
        reasons = []
        finished_path = self.dir / FINISHED_FILE
        if finished_path.exists():
            state, why = self._read(finished_path, FINISHED)
            if state is not None:
                weights, why = self._read(self.dir / state["weights_file"], WEIGHTS)
                if weights is not None:
                    state["weights"] = weights["weights"]
                    return (
                        state,
                        f"training finished earlier (step {state['step']}); exporting its saved weights",
                    )
            reasons.append(why)
        for step, path in self.saves("resume"):
            state, why = self._read(path, RUNNING)
            if state is None:
                reasons.append(why)
                continue
            state["best_weights"] = None
            if state["best_file"]:
                best, why = self._read(self.dir / state["best_file"], WEIGHTS)
                if best is None:
                    reasons.append(f"{path.name}: its best step's weights: {why}")
                    continue
                state["best_weights"] = best["weights"]
            elif state["best"] is not None and state["best"]["step"] == step:
                state["best_weights"] = state["weights"]
            note = f" ({'; '.join(reasons)})" if reasons else ""
            return state, f"resuming from step {step}{note}"
        if not reasons:
            return None, "no saved training state"
        return None, "no usable saved training state: " + "; ".join(reasons)

    # -- writing --------------------------------------------------------------------------------

    def _write(self, name: str, kind: str, extra_bytes: int = 0, **fields) -> Path:
        missing = _REQUIRED[kind] - fields.keys() - {"parts"}
        assert not missing, f"state misses {missing}"
        path = self.dir / name
        write_save({"schema": STATE_SCHEMA, "kind": kind, "parts": self.parts, **fields}, path, extra_bytes)
        return path

    def ensure_weights(self, step: int, weights: dict, extra_bytes: int = 0) -> str:
        """A complete ``weights-<step>.pt`` on disk (written unless there); its name."""
        name = weights_name(step)
        if self._read(self.dir / name, WEIGHTS)[0] is None:
            self._write(name, WEIGHTS, extra_bytes, step=step, weights=weights)
        return name

    def save_running(self, step: int, weights: dict, best: dict | None, best_weights: dict | None, **fields):
        """A resume point at ``step`` (and the best step's weights, when not on disk yet); then the
        saves it replaces are deleted. Raises :class:`SaveFailed` (earlier saves stay)."""
        best_file = None
        if best is not None and best["step"] != step:
            best_file = self.ensure_weights(best["step"], best_weights)
        self._write(
            resume_name(step), RUNNING, step=step, weights=weights, best=best, best_file=best_file, **fields
        )
        self.prune(keep={resume_name(step), best_file})

    def save_finished(
        self, step: int, weights_step: int, weights: dict, extra_bytes: int = 0, **fields
    ) -> None:
        """The finished state (before the checkpoint is written): the export's weights file, then
        ``finished.pt`` naming it. ``extra_bytes``: the checkpoint still to come, if on this disk."""
        weights_file = self.ensure_weights(weights_step, weights, extra_bytes)
        self._write(FINISHED_FILE, FINISHED, extra_bytes, step=step, weights_file=weights_file, **fields)

    def shrink(self) -> None:
        """After the checkpoint is in place: keep only the finished state and its weights file."""
        state, _ = self._read(self.dir / FINISHED_FILE, FINISHED)
        if state is not None:
            self.prune(keep={FINISHED_FILE, state["weights_file"]})

    def prune(self, keep: set) -> None:
        """Delete the saves not in ``keep`` (a finished state goes only when a new run replaces it)."""
        for kind in ("resume", "weights"):
            for _, path in self.saves(kind):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
                    self._say("removed %s (superseded)", path.name)
        if FINISHED_FILE not in keep and (self.dir / FINISHED_FILE).exists():
            (self.dir / FINISHED_FILE).unlink()
