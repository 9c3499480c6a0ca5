"""Rule train: fine-tune MusicGen's LM on the cached EnCodec codes of the voice's clips.

The loss is audiocraft's MusicGen solver loss: the clip's codes are laid out in the LM's delay
pattern, the LM predicts every codebook at every step, and cross-entropy is taken per codebook
over the valid positions (the pattern's validity mask AND the padding mask), then averaged over
codebooks. Each clip's description is its text condition; classifier-free-guidance dropout
blanks it for a share of the samples, as the solver does.

Everything random is drawn from generators seeded by (seed, step), so a run is deterministic on
CPU and a resumed run continues exactly where the interrupted one would have gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .errors import VoiceTrainError
from .fsutil import remove_stale_temps, sha256_file, write_json_atomic
from .progress import progress
from .tokens import REBUILD_TOKENS, TokenSet, load_tokens

log = logging.getLogger(__name__)
console = logging.getLogger("voice_train.console")  # also shown on the console by rule.run_rule

CHECKPOINT_NAME = "tts_voice_train_musicgen_small.pt"
STATE_SCHEMA = "voice_train_state/1"
# Files in the state dir (paths.state_dir/<voice>), outside Snakemake's outputs.
STATE_FILE = "train_state.pt"
BEST_FILE = "best_state.pt"
HISTORY_FILE = "loss_history.json"
JOB_TYPE = "tts_voice_train"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOW_VRAM_RANK = 16


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1500
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-5
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


# ---------------------------------------------------------------------------------------------
# devices, precision, schedule


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VoiceTrainError(
            "config train.device", f"is {name!r} but no CUDA GPU is visible", "set train.device: auto or cpu"
        )
    return name


def resolve_precision(setting: str, device: str) -> str:
    """fp32 on CPU; on CUDA bf16 where supported, else fp16 with a gradient scaler (e.g. a T4)."""
    import torch

    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    if not device.startswith("cuda"):
        return "fp32"
    if setting == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return setting


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak at the last step."""
    if settings.warmup_steps > 0 and step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress_ = min(1.0, (step - settings.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress_))
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine


# ---------------------------------------------------------------------------------------------
# batches


class Batcher:
    """Turns the token cache into padded LM batches, deterministically from (seed, step)."""

    def __init__(self, tokens: TokenSet, settings: TrainSettings, special_token: int) -> None:
        self.tokens = tokens
        self.settings = settings
        self.special = special_token
        self.train_ids = tokens.indices("train")
        self.valid_ids = tokens.indices("valid")
        if not self.train_ids:
            raise VoiceTrainError(
                "token cache", "has no training clips", "record more audio or lower valid_fraction"
            )
        self.segment = max(1, int(round(settings.segment_s * tokens.meta["frame_rate"])))
        self.samples_per_step = settings.batch_size * settings.grad_accum

    def epoch_of(self, step: int) -> float:
        return step * self.samples_per_step / len(self.train_ids)

    def _permutation(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.settings.seed, epoch, 1])
        return [self.train_ids[i] for i in rng.permutation(len(self.train_ids))]

    def train_batch(self, step: int, micro: int):
        """Clip codes (cropped at random to the segment length), padding mask and descriptions."""
        n = len(self.train_ids)
        first = step * self.samples_per_step + micro * self.settings.batch_size
        rng = np.random.default_rng([self.settings.seed, step, micro, 2])
        picks, perms = [], {}
        for position in range(first, first + self.settings.batch_size):
            epoch, index = divmod(position, n)
            if epoch not in perms:
                perms[epoch] = self._permutation(epoch)
            picks.append(perms[epoch][index])
        crops = []
        for clip in picks:
            codes = self.tokens.clip_codes(clip)
            extra = codes.shape[1] - self.segment
            start = int(rng.integers(0, extra + 1)) if extra > 0 else 0
            crops.append(codes[:, start : start + self.segment])
        descriptions = [self.tokens.clips[c]["description"] for c in picks]
        dropped = rng.random(len(picks)) < self.settings.cfg_dropout
        descriptions = [None if drop else d for d, drop in zip(descriptions, dropped)]
        return (*self._pad(crops), descriptions)

    def valid_batches(self):
        """The whole validation split (each clip from its start, up to one segment), in batches."""
        ids = self.valid_ids
        for i in range(0, len(ids), self.settings.batch_size):
            chunk = ids[i : i + self.settings.batch_size]
            crops = [self.tokens.clip_codes(c)[:, : self.segment] for c in chunk]
            yield (*self._pad(crops), [self.tokens.clips[c]["description"] for c in chunk])

    def _pad(self, crops: list[np.ndarray]):
        import torch

        n_q = crops[0].shape[0]
        longest = max(c.shape[1] for c in crops)
        codes = torch.full((len(crops), n_q, longest), self.special, dtype=torch.long)
        mask = torch.zeros((len(crops), n_q, longest), dtype=torch.bool)
        for row, c in enumerate(crops):
            codes[row, :, : c.shape[1]] = torch.from_numpy(c.astype(np.int64))
            mask[row, :, : c.shape[1]] = True
        return codes, mask


# ---------------------------------------------------------------------------------------------
# the model step


def condition_tensors(lm, descriptions: list[str | None]):
    from audiocraft.modules.conditioners import ConditioningAttributes

    attributes = [ConditioningAttributes(text={"description": d}) for d in descriptions]
    tokenized = lm.condition_provider.tokenize(attributes)
    return lm.condition_provider(tokenized)


def cross_entropy(logits, targets, mask):
    """Per-codebook CE over valid positions (as audiocraft's MusicGen solver), averaged over codebooks.

    Returns (loss, per-codebook sums, per-codebook counts); sums and counts are detached.
    """
    import torch
    import torch.nn.functional as F

    n_q = targets.shape[1]
    loss = torch.zeros((), device=targets.device)
    sums, counts = [], []
    for k in range(n_q):
        m = mask[:, k].reshape(-1)
        lk = logits[:, k].reshape(-1, logits.shape[-1])[m].float()
        tk = targets[:, k].reshape(-1)[m]
        ce_sum = F.cross_entropy(lk, tk, reduction="sum")
        count = m.sum()
        loss = loss + ce_sum / count.clamp(min=1)
        sums.append(ce_sum.detach())
        counts.append(count)
    return loss / n_q, torch.stack(sums), torch.stack(counts)


def lm_loss(lm, codes, pad_mask, descriptions, autocast):
    with autocast():
        tensors = condition_tensors(lm, descriptions)
        out = lm.compute_predictions(codes, [], tensors)
    return cross_entropy(out.logits, codes, pad_mask & out.mask)


def evaluate(lm, batcher: Batcher, device: str, autocast) -> float | None:
    """Mean validation cross-entropy (token-weighted per codebook, averaged over codebooks)."""
    import torch

    if not batcher.valid_ids:
        return None
    was_training = lm.training
    lm.eval()
    total_sum, total_count = None, None
    with torch.no_grad():
        for codes, mask, descriptions in batcher.valid_batches():
            _, sums, counts = lm_loss(lm, codes.to(device), mask.to(device), descriptions, autocast)
            total_sum = sums if total_sum is None else total_sum + sums
            total_count = counts if total_count is None else total_count + counts
    lm.train(was_training)
    return float((total_sum / total_count.clamp(min=1)).mean().item())


# ---------------------------------------------------------------------------------------------
# files: status, resume state, checkpoint


def save_torch_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save through a temp dir, keeping the file name (torch writes it into the archive),
    so the same object always gives the same bytes."""
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp = tmp_dir / target.name
        torch.save(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Hard-link ``src`` to ``dst`` (no second copy of a big file); copy across filesystems."""
    src = os.path.realpath(src)
    try:
        os.link(src, dst)
        return "link"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def fingerprint(settings: TrainSettings, model_name: str, base_lm_file: str, tokens: TokenSet) -> str:
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


def load_state(path: Path, expect: str):
    """The resume state if it exists, is readable and matches this run; else None and why."""
    import torch

    if not path.exists():
        return None, "no saved training state"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: start clean
        return None, f"saved training state {path} is unreadable ({type(exc).__name__})"
    required = {"schema", "fingerprint", "step", "model", "optimizer", "scheduler", "best", "history"}
    if not isinstance(state, dict) or not required <= state.keys() or state["schema"] != STATE_SCHEMA:
        return None, f"saved training state {path} is not a voice-train state"
    if state["fingerprint"] != expect:
        return None, "saved training state is for other settings or data"
    return state, f"resuming from step {state['step']}"


class StatusWriter:
    """train_status.json, rewritten atomically; mirrored to the state dir (which survives a failure,
    when Snakemake removes the failed job's outputs)."""

    def __init__(self, path: str, mirror: str | None, base: dict) -> None:
        self.path, self.mirror, self.base = path, mirror, base
        self.last: dict | None = None

    def write(self, **fields_) -> dict:
        data = {**self.base, **fields_, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for path in (self.path, self.mirror):
            if path:
                write_json_atomic(path, data)
        self.last = fields_
        return data


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
    export_dir: str,
    status_path: str,
    state_dir: str,
    voice: str,
    attention_backend: str = "torch",
    loss_plot_path: str | None = None,
) -> TrainResult:
    """Train and export; train_status.json says "error" (and why) if anything fails.

    ``loss_plot_path``, when given, gets the loss curve as a PNG (for ``snakemake --report``).
    """
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, BEST_FILE, "train_status.json", HISTORY_FILE):
        for leftover in remove_stale_temps(Path(state_dir) / name):
            log.info("removed %s, left by an interrupted run", leftover)
    status = StatusWriter(
        status_path,
        str(Path(state_dir) / "train_status.json"),
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
        return _train(
            tokens_path,
            model_name,
            settings,
            checkpoint_path,
            export_dir,
            state_dir,
            attention_backend,
            status,
            loss_plot_path,
        )
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
    batch = f"train.batch_size {settings.batch_size} x train.segment_s {settings.segment_s} s"
    return VoiceTrainError(
        where,
        f"out of GPU memory while training ({batch}, precision {settings.precision}, "
        f"gradient_checkpointing {str(settings.gradient_checkpointing).lower()})",
        "lower train.batch_size and raise train.grad_accum by the same factor (same effective "
        "batch), set train.gradient_checkpointing: true, train.precision: auto (fp16/bf16), "
        "or a shorter train.segment_s; then rerun snakemake",
    )


def _fmt_loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _train(
    tokens_path: str,
    model_name: str,
    settings: TrainSettings,
    checkpoint_path: str,
    export_dir: str,
    state_dir: str,
    attention_backend: str,
    status: StatusWriter,
    loss_plot_path: str | None = None,
) -> TrainResult:
    import torch

    from . import compat, lora, presets

    compat.setup_audiocraft(attention_backend)
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    status.base.update(device=device, precision=precision)
    state_dir_ = Path(state_dir)

    base_lm_file, codec_file = presets.model_files(model_name)
    from .tokens import codec_identity

    tokens = load_tokens(tokens_path, expect_codec=codec_identity(model_name, codec_file))
    torch.manual_seed(settings.seed)
    lm = presets.load_lm(model_name, device=device)
    if tokens.meta["cardinality"] != lm.card or tokens.meta["n_q"] != lm.num_codebooks:
        raise VoiceTrainError(tokens_path, "token cache does not match the LM's codebooks", REBUILD_TOKENS)
    run = settings.effective()  # low_vram switches on checkpointing and LoRA
    if run.gradient_checkpointing:
        lm.transformer.checkpointing = "torch"
    batcher = Batcher(tokens, settings, special_token=lm.special_token_id)

    if run.lora_rank > 0:
        params = lora.add_lora(lm, run.lora_rank, run.lora_alpha, seed=settings.seed)
        if run.low_vram and device.startswith("cuda"):
            lora.freeze_base_in_half(lm)
    else:
        params = [p for p in lm.parameters() if p.requires_grad]
    fused = device.startswith("cuda")
    optimizer = torch.optim.AdamW(
        params,
        lr=settings.lr,
        betas=(0.9, 0.95),
        weight_decay=settings.weight_decay,
        eps=1e-8,
        fused=fused or None,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings))
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        if amp_dtype is None:
            return torch.autocast(device_type="cpu", enabled=False)
        return torch.autocast(device_type="cuda", dtype=amp_dtype)

    run_id = fingerprint(settings, model_name, base_lm_file, tokens)
    state_path = state_dir_ / STATE_FILE
    best_path = state_dir_ / BEST_FILE
    state, why = load_state(state_path, run_id)
    best_state = None
    if state is not None:
        best_state, best_why = load_state_best(best_path, run_id)
        if best_state is None:
            state, why = None, best_why
    console.info("train %s: %s", status.base["voice"], why if state is not None else f"starting clean: {why}")
    history: dict = {"loss": [], "val": []}
    best = None
    start_step = 0
    if state is not None:
        if run.lora_rank > 0:
            lora.load_lora_state(lm, state["model"])
        else:
            lm.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history, best, start_step = state["history"], state["best"], int(state["step"])
    del state

    lm.train()
    tokens_per_step_est = batcher.segment * tokens.meta["n_q"] * settings.batch_size * settings.grad_accum
    log.info(
        "model %s on %s (%s, attention %s): %d trainable parameters (%s); %d train / %d valid clips; "
        "%d steps x %d x %d",
        model_name,
        device,
        precision,
        attention_backend,
        sum(p.numel() for p in params),
        f"LoRA rank {run.lora_rank}" if run.lora_rank > 0 else "full fine-tuning",
        len(batcher.train_ids),
        len(batcher.valid_ids),
        settings.steps,
        settings.batch_size,
        settings.grad_accum,
    )

    started = time.monotonic()

    def snapshot() -> dict:
        """The trained weights: the whole LM, or with LoRA just its low-rank matrices."""
        if run.lora_rank > 0:
            return lora.lora_state(lm)
        return {k: v.detach().to("cpu", copy=True) for k, v in lm.state_dict().items()}

    def run_eval(step: int) -> float | None:
        nonlocal best, best_state
        val = evaluate(lm, batcher, device, autocast)
        history["val"].append([step, val])
        if val is not None and (best is None or val < best["val_loss"]):
            best = {"step": step, "val_loss": val}
            best_state = snapshot()
            save_torch_atomic({"fingerprint": run_id, "step": step, "state": best_state}, best_path)
        elif best is None:
            best = {"step": step, "val_loss": None}
            best_state = snapshot()
            save_torch_atomic({"fingerprint": run_id, "step": step, "state": best_state}, best_path)
        elapsed = time.monotonic() - started if step > start_step else 0.0
        eta = elapsed / (step - start_step) * (settings.steps - step) if step > start_step else None
        console.info(
            "train %s: step %d/%d  loss %s  val_loss %s  best %s (step %d)%s",
            status.base["voice"],
            step,
            settings.steps,
            f"{history['loss'][-1][1]:.3f}" if history["loss"] else "-",
            f"{val:.3f}" if val is not None else "-",
            f"{best['val_loss']:.3f}" if best["val_loss"] is not None else "-",
            best["step"],
            f"  eta {eta:.0f} s" if eta is not None else "",
        )
        return val

    def save_state(step: int) -> None:
        save_torch_atomic(
            {
                "schema": STATE_SCHEMA,
                "fingerprint": run_id,
                "step": step,
                "model": snapshot() if run.lora_rank > 0 else lm.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "best": best,
                "history": history,
            },
            state_path,
        )

    if start_step == 0:
        run_eval(0)  # the base model, before any update
        save_state(0)
    base_val = history["val"][0][1] if history["val"] else None
    loss_value = history["loss"][-1][1] if history["loss"] else None
    tokens_seen = 0
    bar = progress(total=settings.steps, initial=start_step, desc="train", unit="step")
    for step in range(start_step, settings.steps):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(settings.grad_accum):
            codes, mask, descriptions = batcher.train_batch(step, micro)
            codes, mask = codes.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            loss, _, counts = lm_loss(lm, codes, mask, descriptions, autocast)
            loss = loss / settings.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += float(loss.detach())
            tokens_seen += int(counts.sum())
        if not math.isfinite(step_loss):
            raise VoiceTrainError(
                status.path,
                f"training loss became {step_loss} at step {step}",
                "lower train.lr or use train.precision: fp32",
            )
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        done = step + 1
        loss_value = step_loss
        history["loss"].append([done, round(step_loss, 6)])
        bar.update(1)
        bar.set_postfix(
            loss=f"{step_loss:.3f}", best_val=best and best["val_loss"] and f"{best['val_loss']:.3f}"
        )
        val = None
        if done % settings.eval_every == 0 or done == settings.steps:
            val = run_eval(done)
        if done % settings.save_every == 0 and done != settings.steps:
            save_state(done)
        if done % settings.log_every == 0 or val is not None or done == settings.steps:
            elapsed = time.monotonic() - started
            rate = (done - start_step) / elapsed if elapsed > 0 else 0.0
            status.write(
                status="running",
                epoch=round(batcher.epoch_of(done), 3),
                step=done,
                total_steps=settings.steps,
                loss=round(loss_value, 6),
                val_loss=val if val is not None else history["val"][-1][1],
                lr=scheduler.get_last_lr()[0],
                grad_norm=round(float(grad_norm), 4),
                tokens_per_s=round(tokens_seen / elapsed, 1) if elapsed > 0 else None,
                steps_per_s=round(rate, 4),
                elapsed_s=round(elapsed, 1),
                eta_s=round((settings.steps - done) / rate, 1) if rate > 0 else None,
                base_val_loss=base_val,
                best_val_loss=best["val_loss"],
                best_step=best["step"],
            )
    bar.close()
    elapsed = time.monotonic() - started
    log.info(
        "trained %d steps in %.1f s (%d tokens/step)",
        settings.steps - start_step,
        elapsed,
        tokens_per_step_est,
    )

    metadata = {
        "voice": status.base["voice"],
        "base_model": model_name,
        "steps": settings.steps,
        "best_step": best["step"],
        "base_val_loss": base_val,
        "best_val_loss": best["val_loss"],
        "final_loss": loss_value,
        "settings": asdict(settings),
        "tokens_sha256": tokens.content_sha256(),
        "lora": {"rank": run.lora_rank, "alpha": run.lora_alpha, "merged": True}
        if run.lora_rank > 0
        else None,
    }
    if run.lora_rank > 0:  # the export is the base model's weights plus the merged update
        best_state = lora.merged_state(presets.load_lm_state(model_name), lm, best_state)
    export_checkpoint(lm, best_state, metadata, checkpoint_path, export_dir, codec_file)
    checkpoint_sha = sha256_file(checkpoint_path)
    if loss_plot_path is not None:
        from .plots import draw_loss_curve

        title = f"{status.base['voice']}: {model_name}, {settings.steps} steps"
        draw_loss_curve(history, loss_plot_path, title)
    console.info(
        "train %s: done; validation loss %s (base model) -> %s (best, step %d); checkpoint %s",
        status.base["voice"],
        _fmt_loss(base_val),
        _fmt_loss(best["val_loss"]),
        best["step"],
        checkpoint_path,
    )
    final = status.write(
        status="completed",
        epoch=round(batcher.epoch_of(settings.steps), 3),
        step=settings.steps,
        total_steps=settings.steps,
        loss=loss_value,
        val_loss=history["val"][-1][1] if history["val"] else None,
        lr=scheduler.get_last_lr()[0],
        elapsed_s=round(elapsed, 1),
        eta_s=0,
        tokens_per_s=round(tokens_seen / elapsed, 1) if elapsed > 0 else None,
        base_val_loss=base_val,
        best_val_loss=best["val_loss"],
        best_step=best["step"],
        val_history=history["val"],
        checkpoint=str(checkpoint_path),
        checkpoint_sha256=checkpoint_sha,
        checkpoint_size_bytes=os.path.getsize(checkpoint_path),
        export_dir=str(export_dir),
        artifactRefs=[
            str(checkpoint_path),
            str(Path(export_dir) / presets.LM_FILE),
            str(Path(export_dir) / presets.CODEC_FILE),
        ],
    )
    write_json_atomic(state_dir_ / HISTORY_FILE, history)
    return TrainResult(status=final, checkpoint=str(checkpoint_path))


def load_state_best(path: Path, expect: str):
    import torch

    if not path.exists():
        return None, f"best state {path} is missing"
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        return None, f"best state {path} is unreadable ({type(exc).__name__})"
    if not isinstance(pkg, dict) or pkg.get("fingerprint") != expect or "state" not in pkg:
        return None, f"best state {path} belongs to another run"
    return pkg["state"], "ok"


def export_checkpoint(
    lm, best_state: dict, metadata: dict, checkpoint_path: str, export_dir: str, codec_file: str
):
    """Write the LM checkpoint (audiocraft's format) and a pretrained directory beside it."""
    import audiocraft
    from omegaconf import OmegaConf

    from . import presets
    from .fsutil import atomic_dir

    cfg = OmegaConf.create(OmegaConf.to_container(lm.cfg, resolve=True))
    cfg.device = "cpu"
    cfg.dtype = "float32"
    package = {
        "best_state": {k: v.float() if v.is_floating_point() else v for k, v in best_state.items()},
        "xp.cfg": OmegaConf.to_yaml(cfg),
        "version": audiocraft.__version__,
        "exported": True,
        "voice_train": metadata,
    }
    save_torch_atomic(package, checkpoint_path)
    with atomic_dir(export_dir) as tmp:
        link_or_copy(checkpoint_path, Path(tmp) / presets.LM_FILE)
        link_or_copy(codec_file, Path(tmp) / presets.CODEC_FILE)
