"""Rule train: fine-tune MusicGen's LM on the cached EnCodec codes of the voice's clips.

The parts, one module each: :mod:`.batches` (crops, padding, classifier-free-guidance dropout),
:mod:`.objective` (audiocraft's MusicGen solver loss), :mod:`.precision` (device and number
format), :mod:`.trainer` (the settings, the model's setup, one step, validation and the best
step), :mod:`.train_state` (resume), :mod:`.export` (the checkpoint) and :mod:`.status`
(train_status.json). This module runs them: resume or start, the loop, and the end.

The exported weights are those of the trained step with the lowest validation loss (the base
model at step 0 is measured, for reference, but never exported); with no validation clips,
those of the last step.

The end goes in this order, so that a kill at any instant loses nothing: the export's weights
and ``finished.pt`` are saved (a rerun then exports without training), the checkpoint is written
(complete or absent), the state shrinks to the finished state, and the status says completed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import fsutil
from .errors import VoiceTrainError
from .fsutil import SaveFailed, format_bytes, free_bytes, remove_stale_temps, sha256_file, write_json_atomic
from .progress import progress
from .selection import PROMPT_S
from .status import JOB_TYPE, StatusWriter
from .tokens import codec_identity
from .train_state import FINISHED, HISTORY_FILE, StateStore, StateUnreadable
from .trainer import Run, TrainSettings

log = logging.getLogger(__name__)
console = logging.getLogger("voice_train.console")  # also shown on the console by rule.run_rule

CHECKPOINT_NAME = "tts_voice_train_musicgen_small.pt"


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class TrainResult:
    status: dict
    checkpoint: str


def train(
    tokens_path: str,
    model_name: str,
    settings: TrainSettings,
    checkpoint_path: str,
    status_path: str,
    state_dir: str,
    voice: str,
    attention_backend: str = "torch",
    loss_plot_path: str | None = None,
) -> TrainResult:
    """Train and export; train_status.json says "error" (and why) if anything fails.

    ``loss_plot_path``, when given, gets the loss curve as a PNG (for ``snakemake --report``).
    """
    state_dir_ = Path(state_dir)
    state_dir_.mkdir(parents=True, exist_ok=True)
    for name in ("train_status.json", HISTORY_FILE):
        for leftover in remove_stale_temps(state_dir_ / name):
            log.info("removed %s, left by an interrupted run", leftover)
    status = StatusWriter(
        status_path,
        str(state_dir_ / "train_status.json"),
        {
            "voice": voice,
            "jobType": JOB_TYPE,
            "model": model_name,
            "device": settings.device,
            "attention_backend": attention_backend,
        },
    )
    status.write(status="starting", epoch=0, step=0, total_steps=settings.steps, loss=None, val_loss=None)
    try:
        run = Run(tokens_path, model_name, settings, attention_backend)
        lr_key, peak_lr = settings.peak_lr
        status.base.update(device=run.device, precision=run.plan.name, lr_setting=lr_key, peak_lr=peak_lr)
        return _train(run, status, checkpoint_path, state_dir_, loss_plot_path)
    except BaseException as exc:
        last = status.last or {}
        explained = out_of_memory_error(exc, settings, status_path) or state_read_error(exc)
        error = explained or exc
        status.write(**{**last, "status": "error", "error": f"{type(error).__name__}: {error}"})
        if explained is not None:
            raise explained from exc
        raise


# How CUDA says it ran out of memory besides torch.cuda.OutOfMemoryError: allocations inside
# cuBLAS, cuDNN, cuFFT or the CUDA runtime come back as plain RuntimeErrors (torch.AcceleratorError
# from torch 2.8) with these words in them.
OOM_MESSAGES = (
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
    "CUFFT_ALLOC_FAILED",
    "cudaErrorMemoryAllocation",
    "CUBLAS_STATUS_NOT_INITIALIZED",  # cuBLAS could not allocate its handle's workspace
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is CUDA running out of memory, in any form."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "OutOfMemoryError":
            return True
        if isinstance(exc, RuntimeError) and any(m.lower() in str(exc).lower() for m in OOM_MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def state_read_error(exc: BaseException) -> VoiceTrainError | None:
    """A failing disk under a saved state as one line with the fix; else None."""
    if not isinstance(exc, StateUnreadable):
        return None
    return VoiceTrainError(
        str(exc.path),
        f"the saved training state could not be read ({str(exc).split(': ', 1)[-1]}); it was left as it is",
        "check the disk; on Google Drive remount it (drive.mount('/content/drive', force_remount=True)) "
        "and rerun snakemake, which resumes from it",
    )


def out_of_memory_error(exc: BaseException, settings: TrainSettings, where: str) -> VoiceTrainError | None:
    """A GPU out-of-memory error (in any of its forms) as one line naming the settings that lower
    memory; else None."""
    if isinstance(exc, VoiceTrainError) or not is_out_of_memory(exc):
        return None
    run = settings.effective()
    batch = f"train.batch_size {settings.batch_size} x train.segment_s {settings.segment_s} s"
    fixes = []
    if not settings.low_vram:
        fixes.append("set train.low_vram: true (LoRA with a half-precision base: the least memory)")
    fixes.append(
        "lower train.batch_size and raise train.grad_accum by the same factor (same effective batch)"
    )
    if not run.gradient_checkpointing:
        fixes.append("set train.gradient_checkpointing: true")
    if settings.precision == "fp32":
        fixes.append("set train.precision: auto (fp16 or bf16)")
    fixes.append("use a shorter train.segment_s")
    return VoiceTrainError(
        where,
        f"out of GPU memory while training ({batch}, precision {settings.precision}, "
        f"gradient_checkpointing {str(run.gradient_checkpointing).lower()}, "
        f"low_vram {str(settings.low_vram).lower()})",
        "; or ".join(fixes) + "; then rerun snakemake",
    )


def _fmt_loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


SPACE_FIX = (
    "free space there (on Google Drive, also empty the bin: deleted files count for 30 days), "
    "or set train.low_vram: true (LoRA: about 0.1 GB a save for musicgen-small), "
    "or raise train.save_every"
)


def _train(
    run: Run, status: StatusWriter, checkpoint_path: str, state_dir: Path, loss_plot_path: str | None
) -> TrainResult:
    settings, voice = run.settings, status.base["voice"]
    store = StateStore(state_dir, run.state_parts, log)
    for leftover in store.remove_leftovers():
        log.info("removed %s, left by an interrupted save or an older version", leftover)
    state, why = store.load()
    console.info("train %s: %s", voice, why if state is not None else f"starting clean: {why}")
    if state is not None and state["kind"] == FINISHED:
        return _export(run, status, store, state, checkpoint_path, loss_plot_path, speed={})
    _check_space(run, store, checkpoint_path)
    if state is not None:
        run.resume(state)
    del state
    log.info(
        "model %s on %s (%s, attention %s): %d trainable parameters (%s, peak lr %g from %s); "
        "%d train / %d valid clips; %d steps x %d x %d",
        run.model_name,
        run.device,
        run.plan.name,
        status.base["attention_backend"],
        sum(p.numel() for p in run.params),
        f"LoRA rank {run.run.lora_rank}" if run.uses_lora else "full fine-tuning",
        settings.peak_lr[1],
        settings.peak_lr[0],
        len(run.batcher.train_ids),
        len(run.batcher.valid_ids),
        settings.steps,
        settings.batch_size,
        settings.grad_accum,
    )
    if not run.has_validation:
        console.info(
            "train %s: no validation clips: the last step's weights will be exported "
            "(set prepare.valid_fraction above 0 to choose them by validation loss)",
            voice,
        )
    run.start_selection()
    if run.selection is not None and not run.selection.usable:
        console.info(
            "train %s: no validation clip of %.0f s with speech: the export is chosen by validation loss",
            voice,
            PROMPT_S + 1.0,
        )
    speed = _loop(run, status, store)
    return _export(run, status, store, None, checkpoint_path, loss_plot_path, speed)


def _same_disk(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def _check_space(run: Run, store: StateStore, checkpoint_path: str) -> None:
    """Refuse, before any step, a run whose saves cannot fit where they go (one line, the bytes).

    On a local disk a save's space comes back when the save it replaces is deleted, so the run
    needs room for its largest moment: a resume point, the best step's weights and the
    checkpoint. On a FUSE mount (Google Drive on Colab) a deleted file keeps its space in the bin
    for 30 days, so there the run needs room for everything it will write."""
    sizes, settings = run.save_sizes(), run.settings
    resume_points = max(0, (settings.steps - 1) // settings.save_every - run.step // settings.save_every)
    keeps_deleted = fsutil.mount_type(store.dir).startswith("fuse")
    parts = {}
    if resume_points:
        count = resume_points if keeps_deleted else 1
        parts[f"{count} resume point{'s' if count > 1 else ''}"] = count * sizes["resume"]
    parts["the best step's weights"] = sizes["weights"]
    checkpoint_dir = Path(checkpoint_path).parent
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if _same_disk(store.dir, checkpoint_dir):
        parts["the checkpoint"] = sizes["checkpoint"]
    free = free_bytes(store.dir)
    if free is None or free >= sum(parts.values()):
        return
    listed = ", ".join(f"{format_bytes(n)} {what}" for what, n in parts.items())
    where = (
        f"; it is a {fsutil.mount_type(store.dir)} mount, which keeps deleted files (Google Drive: in the "
        "bin, for 30 days), so every save counts"
        if keeps_deleted
        else ""
    )
    raise VoiceTrainError(
        str(store.dir),
        f"not enough free space for training's saves: they need {format_bytes(sum(parts.values()))} "
        f"({listed}) and the disk has {format_bytes(free)} free{where}",
        SPACE_FIX,
    )


def _save(run: Run, store: StateStore, step: int, last_saved: int | None, voice: str) -> int | None:
    """A resume point at ``step``; the step of the newest save on disk afterwards."""
    best_now = run.best is not None and run.best["step"] == step
    weights = run.best_weights if best_now and run.best_weights is not None else run.weights()
    started = time.monotonic()
    try:
        store.save_running(step, weights, run.best, run.best_weights, **run.running_fields())
    except SaveFailed as exc:
        kept = f"the save of step {last_saved} is kept" if last_saved else "there is no earlier save"
        console.warning(
            "train %s: the resume point of step %d was not saved: %s; %s and training goes on; fix: %s",
            voice,
            step,
            exc,
            kept,
            SPACE_FIX,
        )
        return last_saved
    log.info("saved the resume point of step %d in %.1f s", step, time.monotonic() - started)
    return step


def _loop(run: Run, status: StatusWriter, store: StateStore) -> dict:
    """Train from ``run.step`` to the last step; returns how long it took and how fast it went."""
    settings, voice = run.settings, status.base["voice"]
    run.lm.train()
    started, first, tokens_seen = time.monotonic(), run.step, 0
    last_saved = run.step or None  # the step of the newest save on disk
    if run.step == 0:
        _report_eval(run, 0, run.validate(0)[0], voice, eta=None)
    # Closed also when a step raises, so that no half-drawn bar is left to print at exit.
    with progress(total=settings.steps, initial=run.step, desc="train", unit="step") as bar:
        for step in range(run.step, settings.steps):
            loss, grad_norm, tokens = run.train_step(step)
            done = run.step = step + 1
            tokens_seen += tokens
            if math.isfinite(loss):
                run.history["loss"].append([done, round(loss, 6)])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", best_val=_fmt_loss(run.best and run.best["val_loss"]))
            elapsed = time.monotonic() - started
            rate = (done - first) / elapsed if elapsed > 0 else 0.0
            eta = (settings.steps - done) / rate if rate > 0 else None
            val = None
            if done % settings.eval_every == 0 or done == settings.steps:
                val, _ = run.validate(done)
                _report_eval(run, done, val, voice, eta)
            # A resume point every save_every steps, whatever validation does (the last step's
            # weights go straight into the finished state).
            if done % settings.save_every == 0 and done != settings.steps:
                last_saved = _save(run, store, done, last_saved, voice)
            if done % settings.log_every == 0 or val is not None or done == settings.steps:
                status.write(
                    status="running",
                    epoch=round(run.batcher.epoch_of(done), 3),
                    step=done,
                    total_steps=settings.steps,
                    loss=round(loss, 6),
                    val_loss=val if val is not None else run.history["val"][-1][1],
                    lr=run.scheduler.get_last_lr()[0],
                    grad_norm=None if grad_norm is None else round(grad_norm, 4),
                    skipped_steps=run.counters["skipped_steps"],
                    tokens_per_s=round(tokens_seen / elapsed, 1) if elapsed > 0 else None,
                    steps_per_s=round(rate, 4),
                    elapsed_s=round(elapsed, 1),
                    eta_s=round(eta, 1) if eta is not None else None,
                    **_best_fields(run),
                )
    elapsed = time.monotonic() - started
    log.info("trained %d steps in %.1f s", settings.steps - first, elapsed)
    return {
        "elapsed_s": round(elapsed, 1),
        "steps_per_s": round((settings.steps - first) / elapsed, 4) if elapsed > 0 else None,
        "tokens_per_s": round(tokens_seen / elapsed, 1) if elapsed > 0 else None,
    }


def _report_eval(run: Run, step: int, val: float | None, voice: str, eta: float | None) -> None:
    best = run.best
    sounds = run.history.get("voice") or []
    now = sounds[-1][1] if sounds and sounds[-1][0] == step else None
    console.info(
        "train %s: step %d/%d  loss %s  val_loss %s%s  best %s%s",
        voice,
        step,
        run.settings.steps,
        f"{run.history['loss'][-1][1]:.3f}" if run.history["loss"] else "-",
        _fmt_loss(val),
        f"  sounds like her {now:.3f}" if now is not None else "",
        f"step {best['step']}" if best else "-",
        f"  eta {eta:.0f} s" if eta is not None else "",
    )


def _best_fields(run: Run) -> dict:
    base = run.history["val"][0][1] if run.history["val"] and run.history["val"][0][0] == 0 else None
    sounds = run.history.get("voice") or []
    base_voice = sounds[0][1] if sounds and sounds[0][0] == 0 else None
    return {
        "base_val_loss": base,
        "best_val_loss": run.best["val_loss"] if run.best else None,
        "best_step": run.best["step"] if run.best else None,
        "base_voice": base_voice,
        "best_voice": run.best.get("voice") if run.best else None,
    }


def selection_text(run: Run) -> str:
    """How the exported step was chosen, in words (train_status.json's ``selection``)."""
    if run.best is None:
        return (
            "last step (no validation clips)"
            if not run.has_validation
            else "last step (no finite validation loss)"
        )
    if run.best.get("voice") is not None and run.settings.select_by == "voice":
        trained = {v for step, v in run.history.get("voice") or [] if step > 0 and v is not None}
        if len(trained) == 1:
            return "lowest validation loss (every trained step sounded alike to the voice measure: a tie)"
        return "sounds most like her (speaker similarity of continuations of validation clips)"
    return "lowest validation loss"


def _finish(run: Run, store: StateStore, checkpoint_path: str, speed: dict) -> tuple[dict, dict]:
    """Save the finished state before the checkpoint: the chosen weights (no optimizer) and what
    the export and ``--forcerun train`` need. Returns (weights, result)."""
    settings = run.settings
    by_validation = run.has_validation and run.best is not None  # None: no finite validation loss
    chosen_step = run.best["step"] if by_validation else settings.steps
    weights = run.best_weights if by_validation else run.weights()
    result = {
        "final_loss": run.history["loss"][-1][1] if run.history["loss"] else None,
        "lr": run.scheduler.get_last_lr()[0],
        **speed,
        "chosen_step": chosen_step,
    }
    checkpoint_dir = Path(checkpoint_path).parent
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    still_to_write = run.save_sizes()["checkpoint"] if _same_disk(store.dir, checkpoint_dir) else 0
    try:
        store.save_finished(
            step=settings.steps,
            weights_step=chosen_step,
            weights=weights,
            extra_bytes=still_to_write,
            history=run.history,
            best=run.best,
            counters=run.counters,
            result=result,
        )
    except SaveFailed as exc:
        newest = store.saves("resume")
        kept = f"the resume point of step {newest[0][0]} is kept" if newest else "no resume point was saved"
        raise VoiceTrainError(
            str(exc.path),
            f"the finished training could not be saved: {exc.reason} ({exc.size_text}); {kept}",
            SPACE_FIX,
        ) from exc
    return weights, result


def _export(
    run: Run,
    status: StatusWriter,
    store: StateStore,
    finished: dict | None,
    checkpoint_path: str,
    loss_plot_path: str | None,
    speed: dict,
) -> TrainResult:
    """Export the checkpoint of the chosen weights, shrink the state, draw the loss curve, and say
    completed."""
    from . import lora, presets
    from .export import export_checkpoint

    settings, voice = run.settings, status.base["voice"]
    if finished is None:
        chosen, result = _finish(run, store, checkpoint_path, speed)
    else:
        chosen, result = finished["weights"], finished["result"]
        run.history, run.best, run.counters = finished["history"], finished["best"], finished["counters"]
    selection = selection_text(run)
    fields_ = _best_fields(run)
    warning = _never_beat_the_base(fields_, run.lr_key)
    if warning:
        console.warning("train %s: %s", voice, warning)
    metadata = {
        "voice": voice,
        "base_model": run.model_name,
        "steps": settings.steps,
        "chosen_step": result["chosen_step"],
        "selection": selection,
        **fields_,
        "final_loss": result["final_loss"],
        "settings": asdict(settings),
        "tokens_sha256": run.tokens.content_sha256(),
        "codec": codec_identity(run.model_name, run.codec_file),
        "lora": {"rank": run.run.lora_rank, "alpha": run.run.lora_alpha, "merged": True}
        if run.uses_lora
        else None,
    }
    if run.uses_lora:  # the export is the base model's weights plus the merged update
        chosen = lora.merged_state(presets.load_lm_state(run.model_name), run.lm, chosen)
    try:
        export_checkpoint(run.lm.cfg, chosen, metadata, checkpoint_path)
    except SaveFailed as exc:
        raise VoiceTrainError(
            checkpoint_path,
            f"the checkpoint could not be written: {exc.reason} ({exc.size_text}); the finished "
            "training is saved and a rerun exports it without training",
            "free space there (on Google Drive, also empty the bin: deleted files count for 30 days), "
            "then rerun snakemake",
        ) from exc
    store.shrink()
    if loss_plot_path is not None:
        from .plots import draw_loss_curve

        draw_loss_curve(run.history, loss_plot_path, f"{voice}: {run.model_name}, {settings.steps} steps")
    console.info(
        "train %s: done; validation loss %s (base model) -> %s (best, step %s); checkpoint %s",
        voice,
        _fmt_loss(fields_["base_val_loss"]),
        _fmt_loss(fields_["best_val_loss"]),
        fields_["best_step"],
        checkpoint_path,
    )
    final = status.write(
        status="completed",
        epoch=round(run.batcher.epoch_of(settings.steps), 3),
        step=settings.steps,
        total_steps=settings.steps,
        loss=result["final_loss"],
        val_loss=run.history["val"][-1][1] if run.history["val"] else None,
        lr=result["lr"],
        elapsed_s=result.get("elapsed_s"),
        steps_per_s=result.get("steps_per_s"),
        tokens_per_s=result.get("tokens_per_s"),
        eta_s=0,
        skipped_steps=run.counters["skipped_steps"],
        **fields_,
        chosen_step=result["chosen_step"],
        selection=selection,
        warning=warning,
        val_history=run.history["val"],
        voice_history=run.history.get("voice") or None,
        select_by=settings.select_by,
        cfg_dropout=run.cfg_dropout,
        checkpoint=str(checkpoint_path),
        checkpoint_sha256=sha256_file(checkpoint_path),
        checkpoint_size_bytes=os.path.getsize(checkpoint_path),
        artifactRefs=[str(checkpoint_path)],
    )
    write_json_atomic(store.dir / HISTORY_FILE, run.history)
    return TrainResult(status=final, checkpoint=str(checkpoint_path))


def _never_beat_the_base(fields_: dict, lr_key: str) -> str | None:
    base_voice, best_voice = fields_.get("base_voice"), fields_.get("best_voice")
    if base_voice is not None and best_voice is not None and best_voice <= base_voice:
        return (
            f"no trained step sounded more like her than the base model ({base_voice:.3f}): "
            f"the export is the best trained step; try a lower {lr_key}, or check the recording"
        )
    base, best = fields_["base_val_loss"], fields_["best_val_loss"]
    if base is None or best is None or best <= base:
        return None
    return (
        f"validation loss never went below the base model's ({base:.3f}): "
        f"the export is the best trained step; try a lower {lr_key}"
    )
