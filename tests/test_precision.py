"""GPU-only decisions, tested on the CPU with torch.cuda's answers patched to those of real GPUs.

A Colab T4 is compute capability 7.5: no native bf16, though ``torch.cuda.is_bf16_supported()``
says True (it counts emulation). An A100 is 8.0. Nothing here needs a GPU.
"""

from __future__ import annotations

import pytest
import torch

from voice_train.errors import VoiceTrainError
from voice_train.precision import Precision, precision_plan, resolve_device, resolve_precision

GPUS = {"t4": ("Tesla T4", (7, 5)), "a100": ("NVIDIA A100-SXM4-40GB", (8, 0)), "l4": ("NVIDIA L4", (8, 9))}


@pytest.fixture
def gpu(monkeypatch):
    """Make torch.cuda answer as the named GPU would."""

    def as_gpu(kind: str) -> None:
        name, capability = GPUS[kind]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        # What torch really answers on every one of them (emulation counts).
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return as_gpu


def test_auto_on_a_t4_is_fp16_with_a_gradient_scaler(gpu):
    gpu("t4")
    assert resolve_device("auto") == "cuda"
    plan = precision_plan("auto", "cuda", low_vram=False, lora=False)
    assert plan.name == "fp16" and plan.uses_scaler and plan.amp_dtype == torch.float16
    assert plan.fused_adamw and not plan.half_base


@pytest.mark.parametrize("kind", ["a100", "l4"])
def test_auto_is_bf16_where_the_gpu_has_it_natively(gpu, kind):
    gpu(kind)
    plan = precision_plan("auto", "cuda", low_vram=False, lora=False)
    assert plan.name == "bf16" and not plan.uses_scaler and plan.amp_dtype == torch.bfloat16


def test_bf16_asked_for_on_a_t4_is_refused_in_one_line(gpu):
    gpu("t4")
    with pytest.raises(VoiceTrainError) as info:
        resolve_precision("bf16", "cuda")
    message = str(info.value)
    assert "Tesla T4" in message and "7.5" in message and "train.precision: auto" in message
    assert "\n" not in message


def test_the_cpu_always_trains_in_fp32(gpu):
    for setting in ("auto", "fp16", "bf16", "fp32"):
        assert resolve_precision(setting, "cpu") == "fp32"
    plan = precision_plan("auto", "cpu", low_vram=True, lora=True)
    assert plan == Precision("fp32", "cpu") and plan.grad_scaler() is None


@pytest.mark.parametrize("kind", ["t4", "a100"])
def test_low_vram_halves_the_frozen_base_only_under_autocast(gpu, kind):
    gpu(kind)
    half = precision_plan("auto", "cuda", low_vram=True, lora=True)
    assert half.half_base and half.base_dtype == half.amp_dtype  # the base meets activations of its dtype
    full = precision_plan("fp32", "cuda", low_vram=True, lora=True)
    assert not full.half_base and full.base_dtype == torch.float32 and full.amp_dtype is None


def test_a_gpu_asked_for_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VoiceTrainError, match="config encode.device: is 'cuda' but no CUDA GPU"):
        resolve_device("cuda", "encode.device")
