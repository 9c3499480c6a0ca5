"""Where and in which number format training runs: device, precision, and what follows from them.

On a CUDA GPU, ``precision: auto`` means bf16 only where the GPU computes it natively
(compute capability 8.0 or more: A100, L4, H100, RTX 30xx and later); elsewhere (a Colab T4
is 7.5) fp16 with a gradient scaler. ``torch.cuda.is_bf16_supported()`` cannot decide this:
it counts emulation and says True on a T4, where bf16 runs slowly and unscaled.

Everything here imports torch inside functions, so light rules can import the module.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .errors import VoiceTrainError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_CAPABILITY = (8, 0)


def resolve_device(name: str, key: str = "train.device") -> str:
    """``auto`` is the GPU when one is visible, else the CPU; a GPU asked for (config ``key``) must exist."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VoiceTrainError(
            f"config {key}", f"is {name!r} but no CUDA GPU is visible", f"set {key}: auto or cpu"
        )
    return name


def gpu_description(device: str) -> tuple[str, tuple[int, int]]:
    """The GPU's name and compute capability, e.g. ("Tesla T4", (7, 5))."""
    import torch

    return torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))


def has_native_bf16(device: str) -> bool:
    """True where the GPU computes bf16 in hardware (not by emulation)."""
    return gpu_description(device)[1] >= NATIVE_BF16_CAPABILITY


def resolve_precision(setting: str, device: str) -> str:
    """fp32 on the CPU; on a GPU: ``auto`` is bf16 where native, else fp16 (with a scaler).

    ``bf16`` asked for on a GPU without native bf16 is refused: emulated, it is slow and
    has no gradient scaler to protect it.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    if not device.startswith("cuda"):
        return "fp32"
    if setting == "auto":
        return "bf16" if has_native_bf16(device) else "fp16"
    if setting == "bf16" and not has_native_bf16(device):
        name, capability = gpu_description(device)
        raise VoiceTrainError(
            "config train.precision",
            f"is bf16 but the {name} (compute capability {capability[0]}.{capability[1]}) has no native "
            "bf16 (it needs 8.0 or more)",
            "set train.precision: auto (fp16 with a gradient scaler on this GPU) or fp32",
        )
    return setting


@dataclass(frozen=True)
class Precision:
    """How one training run computes: autocast, gradient scaler, frozen-base dtype, optimizer kernel.

    ``half_base``: LoRA's frozen base weights are kept in the autocast dtype (``low_vram`` on a
    GPU). Only with autocast: fp32 activations would meet half-precision weights.
    """

    name: str  # fp32 | fp16 | bf16
    device: str
    half_base: bool = False
    fused_adamw: bool = False

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def amp_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def uses_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        """The context each forward pass runs in."""
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def grad_scaler(self):
        """fp16's gradient scaler (skips a step whose gradients overflowed), else None."""
        import torch

        return torch.amp.GradScaler(self.device_type) if self.uses_scaler else None

    @property
    def base_dtype(self):
        """dtype of LoRA's frozen base weights."""
        import torch

        return self.amp_dtype if self.half_base else torch.float32


def precision_plan(setting: str, device: str, low_vram: bool, lora: bool) -> Precision:
    """The plan for a run: precision from :func:`resolve_precision`, and on a GPU fused AdamW and
    (``low_vram`` with LoRA and half precision) a half-precision frozen base."""
    name = resolve_precision(setting, device)
    on_gpu = device.startswith("cuda")
    return Precision(
        name=name,
        device=device,
        half_base=on_gpu and low_vram and lora and name != "fp32",
        fused_adamw=on_gpu,
    )
