"""Rule train: fine-tune MusicGen's LM on the cached EnCodec codes of the voice's clips.

The parts, one module each: :mod:`.batches` (crops, padding, classifier-free-guidance dropout),
:mod:`.objective` (audiocraft's MusicGen solver loss), :mod:`.precision` (device and number
format), :mod:`.train_state` (resume), :mod:`.export` (the checkpoint) and :mod:`.status`
(train_status.json). This module holds the settings, the model's setup (:class:`Run`) and the
loop.

Everything random is drawn from generators seeded by (seed, step): crops, CFG dropout, and the
T5 conditioner's word dropout. So a run is deterministic on the CPU, and a resumed run continues
exactly where the interrupted one would have gone.

The exported weights are those of the trained step with the lowest validation loss (the base
model at step 0 is measured, for reference, but never exported); with no validation clips,
those of the last step.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .batches import Batcher
from .errors import VoiceTrainError
from .fsutil import remove_stale_temps, sha256_file, write_json_atomic
from .objective import evaluate, lm_loss
from .precision import precision_plan, resolve_device
from .progress import progress
from .status import JOB_TYPE, StatusWriter
from .tokens import REBUILD_TOKENS, codec_identity, load_tokens
from .train_state import (
    FINISHED,
    HISTORY_FILE,
    OBSOLETE_FILES,
    RUNNING,
    STATE_FILE,
    fingerprint,
    load_state,
    save_state,
)

log = logging.getLogger(__name__)
console = logging.getLogger("voice_train.console")  # also shown on the console by rule.run_rule

CHECKPOINT_NAME = "tts_voice_train_musicgen_small.pt"
LOW_VRAM_RANK = 16
# fp16 steps whose gradients overflow are skipped by the scaler; this many in a row is a failure.
MAX_SKIPPED_IN_A_ROW = 25


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1500
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-5  # peak rate of full fine-tuning
    lora_lr: float = 2e-4  # peak rate when LoRA is on (lora_rank > 0 or low_vram)
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    segment_s: float = 10.0
    cfg_dropout: float = 0.1
    eval_every: int = 100
    save_every: int = 100
    log_every: int = 10
    precision: str = "auto"
    gradient_checkpointing: bool = False
    lora_rank: int = 0  # 0: fine-tune every weight; r > 0: LoRA of rank r (voice_train.lora)
    lora_alpha: float = 16.0
    low_vram: bool = False  # a 16 GB GPU (Colab T4): LoRA, gradient checkpointing, half base weights
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_config(cls, section: dict) -> TrainSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})

    def effective(self) -> TrainSettings:
        """What ``low_vram`` turns on: gradient checkpointing and LoRA (rank 16 unless set)."""
        if not self.low_vram:
            return self
        return replace(self, gradient_checkpointing=True, lora_rank=self.lora_rank or LOW_VRAM_RANK)

    @property
    def peak_lr(self) -> tuple[str, float]:
        """The config key and value of the peak learning rate this run uses."""
        if self.effective().lora_rank > 0:
            return "train.lora_lr", self.lora_lr
        return "train.lr", self.lr


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak at the last step."""
    if settings.warmup_steps > 0 and step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress_ = min(1.0, (step - settings.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress_))
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine


# ---------------------------------------------------------------------------------------------
# the model, its optimizer and its bookkeeping


class Run:
    """One training run: the LM (with LoRA if asked), optimizer, schedule, batches and records."""

    def __init__(self, tokens_path: str, model_name: str, settings: TrainSettings, attention_backend: str):
        import torch

        from . import compat, lora, presets

        compat.setup_audiocraft(attention_backend)
        self.settings, self.model_name = settings, model_name
        self.run = settings.effective()  # low_vram switches on checkpointing and LoRA
        self.uses_lora = self.run.lora_rank > 0
        self.device = resolve_device(settings.device)
        self.plan = precision_plan(settings.precision, self.device, self.run.low_vram, self.uses_lora)
        base_lm_file, self.codec_file = presets.model_files(model_name)
        self.tokens = load_tokens(tokens_path, expect_codec=codec_identity(model_name, self.codec_file))
        torch.manual_seed(settings.seed)
        self.lm = lm = presets.load_lm(model_name, device=self.device)
        if self.tokens.meta["cardinality"] != lm.card or self.tokens.meta["n_q"] != lm.num_codebooks:
            raise VoiceTrainError(
                tokens_path, "token cache does not match the LM's codebooks", REBUILD_TOKENS
            )
        if self.run.gradient_checkpointing:
            lm.transformer.checkpointing = "torch"
        self.batcher = Batcher(self.tokens, settings, special_token=lm.special_token_id)
        if self.uses_lora:
            self.params = lora.add_lora(lm, self.run.lora_rank, self.run.lora_alpha, seed=settings.seed)
            if self.plan.half_base:
                lora.freeze_base(lm, self.plan.base_dtype)
        else:
            self.params = [p for p in lm.parameters() if p.requires_grad]
        self.lr_key, peak_lr = settings.peak_lr
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=peak_lr,
            betas=(0.9, 0.95),
            weight_decay=settings.weight_decay,
            eps=1e-8,
            fused=True if self.plan.fused_adamw else None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, settings))
        self.scaler = self.plan.grad_scaler()
        self.fingerprint = fingerprint(settings, model_name, base_lm_file, self.tokens)
        self.step = 0
        self.history: dict = {"loss": [], "val": []}
        self.best: dict | None = None  # {"step", "val_loss"}: the best trained step
        self.best_weights: dict | None = None
        self.counters = {"skipped_steps": 0}

    @property
    def has_validation(self) -> bool:
        return bool(self.batcher.valid_ids)

    def weights(self) -> dict:
        """The trained weights, on the CPU: the whole LM, or with LoRA just its low-rank matrices."""
        from . import lora

        if self.uses_lora:
            return lora.lora_state(self.lm)
        return {k: v.detach().to("cpu", copy=True) for k, v in self.lm.state_dict().items()}

    def load_weights(self, weights: dict) -> None:
        from . import lora

        if self.uses_lora:
            lora.load_lora_state(self.lm, weights)
        else:
            self.lm.load_state_dict(weights)

    def resume(self, state: dict) -> None:
        """Continue from a running state (saved at the best step, or at a save_every step)."""
        self.load_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.history, self.best = int(state["step"]), state["history"], state["best"]
        self.counters = dict(state["counters"])
        if self.has_validation and self.best is not None:
            self.best_weights = state["weights"]

    def save(self, path: Path, step: int) -> None:
        weights = self.best_weights if self.best_weights is not None and self.best["step"] == step else None
        save_state(
            path,
            RUNNING,
            fingerprint=self.fingerprint,
            step=step,
            weights=weights if weights is not None else self.weights(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else {},
            history=self.history,
            best=self.best,
            counters=self.counters,
        )

    def train_step(self, step: int) -> tuple[float, float | None, int]:
        """One optimizer step: (loss, gradient norm or None when the step was skipped, tokens)."""
        import torch

        settings, scaler = self.settings, self.scaler
        self.optimizer.zero_grad(set_to_none=True)
        step_loss, tokens = 0.0, 0
        for micro in range(settings.grad_accum):
            batch = self.batcher.train_batch(step, micro)
            codes, mask = batch.codes.to(self.device), batch.mask.to(self.device)
            loss, _, counts = lm_loss(
                self.lm, codes, mask, batch.descriptions, self.plan.autocast, batch.text_seed
            )
            loss = loss / settings.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += float(loss.detach())
            tokens += int(counts.sum())
        if scaler is None and not math.isfinite(step_loss):
            raise VoiceTrainError(
                "train_status.json",
                f"training loss became {step_loss} at step {step}",
                "lower train.lr (or train.lora_lr with LoRA)",
            )
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, settings.max_grad_norm))
        if scaler is not None:  # it skips the update when the gradients overflowed, and lowers its scale
            scale = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            skipped = scaler.get_scale() < scale
        else:
            skipped = not math.isfinite(grad_norm)
            if not skipped:
                self.optimizer.step()
        self.scheduler.step()
        if skipped:
            self.counters["skipped_steps"] += 1
            self.counters["skipped_in_a_row"] = self.counters.get("skipped_in_a_row", 0) + 1
            if self.counters["skipped_in_a_row"] >= MAX_SKIPPED_IN_A_ROW:
                raise VoiceTrainError(
                    "train_status.json",
                    f"{MAX_SKIPPED_IN_A_ROW} steps in a row were skipped for non-finite gradients "
                    f"(last at step {step}, precision {self.plan.name})",
                    "lower the learning rate, or set train.precision: fp32",
                )
            return step_loss, None, tokens
        self.counters["skipped_in_a_row"] = 0
        return step_loss, grad_norm, tokens

    def validate(self, step: int) -> tuple[float | None, bool]:
        """Validation loss at ``step`` and whether it is the best trained step so far."""
        val = evaluate(self.lm, self.batcher, self.device, self.plan.autocast)
        self.history["val"].append([step, val])
        improved = step > 0 and val is not None and (self.best is None or val < self.best["val_loss"])
        if improved:
            self.best = {"step": step, "val_loss": val}
            self.best_weights = self.weights()
        return val, improved


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
    for name in (STATE_FILE, "train_status.json", HISTORY_FILE, *OBSOLETE_FILES):
        for leftover in remove_stale_temps(state_dir_ / name):
            log.info("removed %s, left by an interrupted run", leftover)
    for name in OBSOLETE_FILES:
        if (state_dir_ / name).exists():
            (state_dir_ / name).unlink()
            log.info("removed %s (written by an older version; no longer used)", state_dir_ / name)
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
        explained = out_of_memory_error(exc, settings, status_path)
        error = explained or exc
        status.write(**{**last, "status": "error", "error": f"{type(error).__name__}: {error}"})
        if explained is not None:
            raise explained from exc
        raise


def out_of_memory_error(exc: BaseException, settings: TrainSettings, where: str) -> VoiceTrainError | None:
    """A GPU out-of-memory error as one line naming the settings that lower memory; else None."""
    if type(exc).__name__ != "OutOfMemoryError":
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


def _train(
    run: Run, status: StatusWriter, checkpoint_path: str, state_dir: Path, loss_plot_path: str | None
) -> TrainResult:
    settings = run.settings
    state_path = state_dir / STATE_FILE
    state, why = load_state(state_path, run.fingerprint)
    voice = status.base["voice"]
    console.info("train %s: %s", voice, why if state is not None else f"starting clean: {why}")
    if state is not None and state["kind"] == FINISHED:
        return _export(run, status, state, checkpoint_path, state_dir, loss_plot_path, speed={})
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
    speed = _loop(run, status, state_path)
    return _export(run, status, None, checkpoint_path, state_dir, loss_plot_path, speed)


def _loop(run: Run, status: StatusWriter, state_path: Path) -> dict:
    """Train from ``run.step`` to the last step; returns how long it took and how fast it went."""
    settings, voice = run.settings, status.base["voice"]
    run.lm.train()
    started, first, tokens_seen = time.monotonic(), run.step, 0
    if run.step == 0:
        _report_eval(run, 0, run.validate(0)[0], voice, eta=None)
    bar = progress(total=settings.steps, initial=run.step, desc="train", unit="step")
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
            val, improved = run.validate(done)
            _report_eval(run, done, val, voice, eta)
            if improved and done != settings.steps:
                run.save(state_path, done)  # the best step: resume from it, export it
        if not run.has_validation and done % settings.save_every == 0 and done != settings.steps:
            run.save(state_path, done)
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
    bar.close()
    elapsed = time.monotonic() - started
    log.info("trained %d steps in %.1f s", settings.steps - first, elapsed)
    return {
        "elapsed_s": round(elapsed, 1),
        "steps_per_s": round((settings.steps - first) / elapsed, 4) if elapsed > 0 else None,
        "tokens_per_s": round(tokens_seen / elapsed, 1) if elapsed > 0 else None,
    }


def _report_eval(run: Run, step: int, val: float | None, voice: str, eta: float | None) -> None:
    best = run.best
    console.info(
        "train %s: step %d/%d  loss %s  val_loss %s  best %s%s",
        voice,
        step,
        run.settings.steps,
        f"{run.history['loss'][-1][1]:.3f}" if run.history["loss"] else "-",
        _fmt_loss(val),
        f"{best['val_loss']:.3f} (step {best['step']})" if best else "-",
        f"  eta {eta:.0f} s" if eta is not None else "",
    )


def _best_fields(run: Run) -> dict:
    base = run.history["val"][0][1] if run.history["val"] and run.history["val"][0][0] == 0 else None
    return {
        "base_val_loss": base,
        "best_val_loss": run.best["val_loss"] if run.best else None,
        "best_step": run.best["step"] if run.best else None,
    }


def _export(
    run: Run,
    status: StatusWriter,
    finished: dict | None,
    checkpoint_path: str,
    state_dir: Path,
    loss_plot_path: str | None,
    speed: dict,
) -> TrainResult:
    """Shrink the state to the chosen weights, export the checkpoint, and say completed."""
    from . import lora, presets
    from .export import export_checkpoint

    settings, voice = run.settings, status.base["voice"]
    if finished is None:
        chosen = run.best_weights if run.has_validation else run.weights()
        step = run.best["step"] if run.has_validation else settings.steps
        result = {
            "final_loss": run.history["loss"][-1][1] if run.history["loss"] else None,
            "lr": run.scheduler.get_last_lr()[0],
            **speed,
            "chosen_step": step,
        }
        save_state(
            state_dir / STATE_FILE,
            FINISHED,
            fingerprint=run.fingerprint,
            step=settings.steps,
            weights=chosen,
            history=run.history,
            best=run.best,
            counters=run.counters,
            result=result,
        )
    else:
        chosen, result = finished["weights"], finished["result"]
        run.history, run.best, run.counters = finished["history"], finished["best"], finished["counters"]
    selection = "lowest validation loss" if run.has_validation else "last step (no validation clips)"
    fields_ = _best_fields(run)
    warning = None
    if fields_["base_val_loss"] is not None and fields_["best_val_loss"] > fields_["base_val_loss"]:
        warning = (
            f"validation loss never went below the base model's ({fields_['base_val_loss']:.3f}): "
            f"the export is the best trained step; try a lower {run.lr_key}"
        )
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
    export_checkpoint(run.lm.cfg, chosen, metadata, checkpoint_path)
    if loss_plot_path is not None:
        from .plots import draw_loss_curve

        title = f"{voice}: {run.model_name}, {settings.steps} steps"
        draw_loss_curve(run.history, loss_plot_path, title)
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
        checkpoint=str(checkpoint_path),
        checkpoint_sha256=sha256_file(checkpoint_path),
        checkpoint_size_bytes=os.path.getsize(checkpoint_path),
        artifactRefs=[str(checkpoint_path)],
    )
    write_json_atomic(state_dir / HISTORY_FILE, run.history)
    return TrainResult(status=final, checkpoint=str(checkpoint_path))
