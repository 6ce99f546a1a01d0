"""Device, precision and thread choices, resolved once and shared by training, evaluation and the app."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


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


def available_cpus(affinity: set[int] | None = None, cgroup_root: str | None = None,
                   proc_cgroup: str | None = None) -> int:
    """The CPUs this process may really use: its affinity mask (taskset, cpusets), cut down to a cgroup
    CPU quota (a container's or a Space's `--cpus`) rounded down, at least 1. torch's default counts the
    machine's cores, so in a 2-CPU container on a 64-core host it would start 64 threads that mostly
    wait for each other. The arguments replace the real sources (tests)."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    n = len(affinity)
    quota = cgroup_cpu_quota(CGROUP_ROOT if cgroup_root is None else cgroup_root,
                             PROC_CGROUP if proc_cgroup is None else proc_cgroup)
    if quota is not None:
        n = min(n, int(quota))
    return max(1, n)


def cgroup_cpu_quota(root: str, proc_cgroup: str) -> float | None:
    """The tightest CPU quota (in CPUs) over this process's cgroup and its ancestors, v2 `cpu.max` or
    v1 `cpu.cfs_quota_us / cpu.cfs_period_us`; None when there is none."""
    found = [q for d in _cgroup_dirs(root, proc_cgroup) for q in (_v2_quota(d), _v1_quota(d)) if q is not None]
    return min(found) if found else None


def _cgroup_dirs(root: str, proc_cgroup: str) -> list[str]:
    """Folders that may hold this process's CPU limits: its own cgroup (v2 unified, or v1's cpu
    controller), each ancestor up to the mount point, and the mount points themselves (a container
    usually sees its own cgroup there)."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    dirs = []
    for base in (root, os.path.join(root, "cpu"), os.path.join(root, "cpu,cpuacct"), os.path.join(root, "unified")):
        dirs.append(base)
        for line in lines:
            _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if controllers and "cpu" not in controllers.split(","):
                continue
            parts = [p for p in path.split("/") if p and p not in (".", "..")]
            dirs += [os.path.join(base, *parts[:k]) for k in range(1, len(parts) + 1)]
    return list(dict.fromkeys(dirs))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(folder: str) -> float | None:
    text = _read(os.path.join(folder, "cpu.max"))  # "max 100000" (no limit) or "150000 100000"
    try:
        quota, period = text.split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (AttributeError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: str) -> float | None:
    try:
        quota = int(_read(os.path.join(folder, "cpu.cfs_quota_us")))  # -1 = no limit
        period = int(_read(os.path.join(folder, "cpu.cfs_period_us")))
        return quota / period if quota > 0 and period > 0 else None
    except (TypeError, ValueError):
        return None


def make_runtime(
    device: str = "auto", precision: str = "auto", channels_last: bool = True, threads: int = 0
) -> Runtime:
    """`threads` 0 = the CPUs this process may use (available_cpus)."""
    dev = resolve_device(device)
    torch.set_num_threads(threads if threads > 0 else available_cpus())
    rt = _runtime(dev, precision, channels_last)
    # TF32 is left off: it would also run the loss's float32 covariance at 10-bit mantissa precision
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return rt


def plan_runtime(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
    """The Runtime `make_runtime` would make, with nothing set up (torch's threads are left as they are): what a
    page says about a device before any run."""
    return _runtime(resolve_device(device), precision, channels_last)


def _runtime(dev: torch.device, precision: str, channels_last: bool) -> Runtime:
    if precision == "bf16" and not bf16_supported(dev) and dev.type != "cpu":
        raise ValueError(f"bf16 is not supported on {dev}; use --precision fp32")
    bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(dev))
    return Runtime(dev, bf16, channels_last and dev.type in ("cpu", "cuda"))


def cpu_kind(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its bf16 matrix hardware: speed figures differ by this more than by anything
    else (AMX tiles, AVX-512-BF16 vectors, or neither), so benchmarks print it beside every figure."""
    text = _read(cpuinfo) or ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    kind = "AMX bf16" if "amx_bf16" in flags else "AVX-512-BF16, no AMX" if "avx512_bf16" in flags else "no bf16 units"
    return f"{name} ({kind})"
