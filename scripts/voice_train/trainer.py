"""The model being trained: its settings, its setup, one optimizer step, validation and the best
step, and the resume state's contents. :mod:`.train` runs the loop around it.

Everything random is drawn from generators seeded by (seed, step): crops, CFG dropout (in
:mod:`.batches`), and the T5 conditioner's word dropout (seeded per micro-batch). So a run is
deterministic on the CPU, and a resumed run continues exactly where the interrupted one would
have gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from .batches import Batcher
from .errors import VoiceTrainError
from .objective import evaluate, lm_loss
from .precision import precision_plan, resolve_device
from .tokens import REBUILD_TOKENS, codec_identity, load_tokens
from .train_state import fingerprint_parts

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
    cfg_dropout: float | None = None  # None: the loaded model's own (musicgen-small: 0.3); one draw per batch
    select_by: str = "voice"  # voice: the step that sounds most like her (voice_train.selection); loss
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


class Run:
    """One training run: the LM (with LoRA if asked), optimizer, schedule, batches and records."""

    def __init__(self, tokens_path: str, model_name: str, settings: TrainSettings, attention_backend: str):
        import torch

        from . import compat, lora, presets

        self.settings, self.model_name = settings, model_name
        self.run = settings.effective()  # low_vram switches on checkpointing and LoRA
        self.uses_lora = self.run.lora_rank > 0
        # What can be refused is checked before audiocraft's long import: device, precision, data.
        self.device = resolve_device(settings.device)
        self.plan = precision_plan(settings.precision, self.device, self.run.low_vram, self.uses_lora)
        base_lm_file, self.codec_file = presets.model_files(model_name)
        self.tokens = load_tokens(tokens_path, expect_codec=codec_identity(model_name, self.codec_file))
        compat.setup_audiocraft(attention_backend)
        torch.manual_seed(settings.seed)
        self.lm = lm = presets.load_lm(model_name, device=self.device)
        if self.tokens.meta["cardinality"] != lm.card or self.tokens.meta["n_q"] != lm.num_codebooks:
            raise VoiceTrainError(
                tokens_path, "token cache does not match the LM's codebooks", REBUILD_TOKENS
            )
        if self.run.gradient_checkpointing:
            lm.transformer.checkpointing = "torch"
        # Classifier-free guidance dropout: the model's own unless the config sets one.
        own = float(getattr(getattr(lm, "cfg_dropout", None), "p", 0.0))
        self.cfg_dropout = own if settings.cfg_dropout is None else float(settings.cfg_dropout)
        resolved = replace(settings, cfg_dropout=self.cfg_dropout)
        self.batcher = Batcher(self.tokens, resolved, special_token=lm.special_token_id)
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
        precision = self.plan.name + (" with a half-precision frozen base" if self.plan.half_base else "")
        self.state_parts = fingerprint_parts(resolved, precision, model_name, base_lm_file, self.tokens)
        self.selection = None  # set by :meth:`start_selection` with select_by: voice
        self.step = 0
        self.history: dict = {"loss": [], "val": [], "voice": []}
        self.best: dict | None = None  # {"step", "val_loss", "voice"}: the best trained step
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
        """Continue from a resume save (:meth:`.train_state.StateStore.load`)."""
        self.load_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.history, self.best = int(state["step"]), state["history"], state["best"]
        self.counters = dict(state["counters"])
        self.best_weights = state["best_weights"] if self.has_validation else None

    def running_fields(self) -> dict:
        """What a resume save holds besides the weights and the best step."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "history": self.history,
            "counters": self.counters,
        }

    def save_sizes(self) -> dict:
        """About how many bytes each kind of file takes: a resume save (weights + AdamW's two
        moments), a weights file, and the exported checkpoint (the whole LM in float32)."""
        trainable = sum(p.numel() for p in self.params) * 4
        lm = sum(v.numel() for v in self.lm.state_dict().values()) * 4
        weights = trainable if self.uses_lora else lm
        return {"resume": weights + 2 * trainable, "weights": weights, "checkpoint": lm}

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

    def start_selection(self) -> None:
        """With ``select_by: voice`` and validation clips: score how the model sounds at each
        validation (:mod:`.selection`; needs the codec and the speaker encoder)."""
        if self.settings.select_by != "voice" or not self.has_validation:
            return
        from . import presets
        from .selection import VoiceSelection

        codec = presets.load_compression(self.model_name, device=self.device)
        clips = [self.tokens.clips[i] for i in self.batcher.valid_ids]
        self.selection = VoiceSelection(self.lm, codec, clips, lambda clip: clip["description"], self.device)

    def validate(self, step: int) -> tuple[float | None, bool]:
        """Validation loss at ``step`` (and, choosing by voice, how it sounds), and whether it is
        the best trained step so far. A value that is not a finite number never wins."""
        from .selection import better

        val = evaluate(self.lm, self.batcher, self.device, self.plan.autocast)
        self.history["val"].append([step, val])
        voice = self.selection.score(step) if self.selection is not None and self.selection.usable else None
        if self.selection is not None:
            self.history.setdefault("voice", []).append([step, voice])
        candidate = {"step": step, "val_loss": val, "voice": voice}
        improved = step > 0 and better(candidate, self.best, self.settings.select_by)
        if improved:
            self.best = candidate
            self.best_weights = self.weights()
        return val, improved
