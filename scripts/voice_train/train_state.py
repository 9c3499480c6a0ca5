"""The resume state: one file in the state dir (``paths.state_dir/<voice>``), outside Snakemake's outputs.

Disk is the scarce thing on the real job (a free Google Drive holds 15 GB, and a full fine-tune
of musicgen-small has a ~5 GB state: fp32 weights plus AdamW's two moments). So:

* There is one state file and no separate "best state": with validation clips, the state is
  written at a validation that beats every earlier trained step (at most every ``save_every``
  steps), so it always holds a best step's weights and resumes from there; the newest best is
  also kept in memory for the export. Without validation clips, every ``save_every`` steps.
* It is rewritten in place, never through a second copy: the disk holds one state at a time and
  each save writes the state's own bytes once. A save cut short leaves a torn file, which
  :func:`load_state` refuses ("unreadable"): the next run then starts clean.
* When training ends, the state shrinks to a *finished* state: the chosen weights only (no
  optimizer), from which the checkpoint is exported, and re-exported by ``--forcerun train``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from .fsutil import sha256_file

STATE_SCHEMA = "voice_train_state/2"
STATE_FILE = "train_state.pt"
HISTORY_FILE = "loss_history.json"
RUNNING, FINISHED = "running", "finished"
# Left by older versions of the workflow: removed at start, they only take space.
OBSOLETE_FILES = ("best_state.pt",)
_REQUIRED = {
    RUNNING: {
        "fingerprint",
        "step",
        "weights",
        "optimizer",
        "scheduler",
        "scaler",
        "history",
        "best",
        "counters",
    },
    FINISHED: {"fingerprint", "step", "weights", "history", "best", "counters", "result"},
}


def fingerprint(settings, model_name: str, base_lm_file: str, tokens) -> str:
    """What a state belongs to: settings, base weights, data, library versions."""
    import audiocraft
    import torch

    data = {
        "settings": asdict(settings),
        "model": model_name,
        "base_lm_sha256": sha256_file(base_lm_file),
        "tokens_sha256": tokens.content_sha256(),
        "audiocraft": audiocraft.__version__,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_in_place(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` straight over ``path`` (one copy on disk; see the module docstring), synced."""
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def save_state(path: str | os.PathLike, kind: str, **fields) -> None:
    missing = _REQUIRED[kind] - fields.keys()
    assert not missing, f"state misses {missing}"
    save_in_place({"schema": STATE_SCHEMA, "kind": kind, **fields}, path)


def load_state(path: str | os.PathLike, expect: str):
    """The saved state if it exists, is whole and belongs to this run; else None and why."""
    import torch

    path = Path(path)
    if not path.exists():
        return None, "no saved training state"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn save or a foreign file: start clean
        return None, f"saved training state {path} is unreadable ({type(exc).__name__}; a save cut short?)"
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in _REQUIRED or state.get("schema") != STATE_SCHEMA or not _REQUIRED[kind] <= state.keys():
        return None, f"saved training state {path} is not a voice-train state of this version"
    if state["fingerprint"] != expect:
        return None, "saved training state is for other settings or data"
    if kind == FINISHED:
        return state, f"training finished earlier (step {state['step']}); exporting its saved weights"
    return state, f"resuming from step {state['step']}"
