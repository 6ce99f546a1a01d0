"""Device, precision and thread choices, resolved once and shared by training, evaluation and the app."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    channels_last: bool

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def describe(self) -> str:
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        return f"{name}, {'bf16 autocast' if self.bf16 else 'fp32'}{', channels-last' if self.channels_last else ''}"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available here; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    return dev


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        # native bf16 tensor cores start at compute capability 8.0 (Ampere); is_bf16_supported()
        # also counts the emulated bf16 of older cards, which is slower than fp32
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        # oneDNN's check is true on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere bf16 is
        # emulated and slower than fp32, so "auto" keeps fp32 there.
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def make_runtime(
    device: str = "auto", precision: str = "auto", channels_last: bool = True, threads: int = 0
) -> Runtime:
    dev = resolve_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    if precision == "bf16" and not bf16_supported(dev) and dev.type != "cpu":
        raise ValueError(f"bf16 is not supported on {dev}; use --precision fp32")
    bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(dev))
    # TF32 is left off: it would also run the loss's float32 covariance at 10-bit mantissa precision
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, bf16, channels_last and dev.type in ("cpu", "cuda"))
