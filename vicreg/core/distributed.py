"""Data-parallel training under `torchrun`: process group, the global-batch gather, synced BatchNorm,
stop agreement and the per-rank pieces of a checkpoint. Everything here is a no-op for one process.

Design (docs/gpu.md):
- `--batch_size` is the GLOBAL batch; it must divide by the world size. The epoch's order is the same
  pure function of (seed, epoch) on every rank, and rank r takes the r-th contiguous slice of each
  global batch, so the learning rate (scaled by the global batch) and steps per epoch do not change
  with the number of processes, and a resume on the same world size is exact.
- Each rank augments with its own generator (rank 0 keeps the single-process seed); a checkpoint
  saved inside an epoch stores every rank's generator state as `rng.augment.<rank>`.
- Variance and covariance see the global batch through `full_gather` (forward all_gather, backward
  all_reduce then the rank's own slice); invariance is per pair and stays local. DDP then averages
  the gradients, which gives exactly the single-process gradient on the concatenated batch.
- A stop request is agreed every step (all_reduce MAX of a flag, on a CPU group), so every rank stops
  at the same step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "auto"  # the device this rank trains on (cuda:LOCAL_RANK on GPUs)
    backend: str = ""
    cpu_group: Any = None  # a gloo group for flags and objects (None: the default group)
    owned: bool = False  # this module created the process group and destroys it

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(device: str) -> Dist:
    """Join torchrun's process group (env://) when WORLD_SIZE > 1: NCCL on cuda:LOCAL_RANK, gloo on CPUs."""
    from .runtime import resolve_device

    rank, world, local = env_world()
    if world <= 1:
        return Dist(device=device)
    kind = resolve_device(device).type
    if kind == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    elif kind != "cpu":
        raise ValueError(f"distributed training runs on CUDA (NCCL) or CPU (gloo), not {kind}")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", init_method="env://")
    backend = dist.get_backend()
    cpu_group = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Dist(dist.get_rank(), dist.get_world_size(), local, device, backend, cpu_group, owned)


def teardown(d: Dist) -> None:
    if d.owned and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a peer already gone: nothing left to tidy
            pass


class FullGatherLayer(torch.autograd.Function):
    """all_gather whose backward all_reduces the gradient and returns this rank's slice (the official
    VICReg code's layer): every rank's copy of the global loss sends gradient to every rank's rows."""

    @staticmethod
    def forward(_ctx, x: Tensor):
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(_ctx, *grads: Tensor):
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def full_gather(x: Tensor) -> Tensor:
    """The (world * n, d) global batch, rank order; differentiable as above."""
    return torch.cat(FullGatherLayer.apply(x), dim=0)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(_ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(_ctx, g: Tensor) -> Tensor:
        g = g.clone()
        dist.all_reduce(g)
        return g


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on any backend (torch's SyncBatchNorm needs a GPU): two exact
    passes (mean, then centred squares), each a differentiable all_reduce. Same state dict as BatchNorm."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims, shape = [0, *range(2, x.dim())], (1, c) + (1,) * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 / fp16 inputs: statistics in fp32
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // c])]))
        n = stats[-1].detach()
        mean = stats[:-1] / n
        xc = xf - mean.view(shape)
        var = _AllReduceSum.apply((xc * xc).sum(dims)) / n
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_((var.detach() * n / (n - 1).clamp_min(1)).to(self.running_var.dtype), m)
        return y.to(x.dtype)


def convert_sync_bn(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm in `module` synced across ranks: torch's kernel on CUDA, `SyncBatchNorm` elsewhere."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_bn(child, device_type))
    return module


def prepare(model: nn.Module, device_type: str, sync_backbone: bool, d: Dist) -> nn.Module:
    """Under torchrun: the projector's BatchNorm synced (as in the paper), the backbone's when asked,
    and the loss's variance and covariance over the global batch. A VICReg model, unchanged for one process."""
    if d.active:
        model.projector = convert_sync_bn(model.projector, device_type)
        if sync_backbone:
            model.backbone = convert_sync_bn(model.backbone, device_type)
        model.gather = full_gather
    return model


def wrap(model: nn.Module, device: torch.device, d: Dist) -> nn.Module:
    """DistributedDataParallel around the model under torchrun (one forward = both views and the loss)."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def place(images: Tensor, device: torch.device) -> Tensor:
    """The uint8 set on the device, or in pinned host memory when it would take over half the free GPU
    memory (batches are then copied over one at a time without blocking)."""
    if device.type == "cuda" and placement(images.numel(), torch.cuda.mem_get_info(device)[0]) == "pinned":
        return images.pin_memory()
    return images.to(device)


def agree(flag: bool, d: Dist) -> bool:
    """True on every rank when any rank says True (one tiny all_reduce MAX on a CPU group)."""
    if not d.active:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=d.cpu_group)
    return bool(t.item())


def mean_over_ranks(t: Tensor, d: Dist) -> Tensor:
    """The mean of a tensor over ranks (gloo has no AVG), identical on every rank afterwards."""
    if not d.active:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / d.world


def rank0_first(d: Dist, fn: Callable[[], Any]) -> Any:
    """Run `fn` (a download or a decode-cache build) on each node's local rank 0 first, then on the
    other ranks, which find it done; a failure anywhere is raised on every rank instead of leaving the
    others waiting at a barrier."""
    if not d.active:
        return fn()
    result, error = None, None
    if d.local_rank == 0:
        try:
            result = fn()
        except Exception as e:
            error = e
    errors: list[Any] = [None] * d.world
    dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}", group=d.cpu_group)
    if error is not None:
        raise error
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        raise RuntimeError(f"rank {failed[0][0]} failed to load the data: {failed[0][1]}")
    return result if d.local_rank == 0 else fn()


def rng_states(state: Tensor, d: Dist) -> dict[str, Tensor]:
    """Checkpoint tensors for the augmentation generators: `rng.augment` (rank 0, as a single process
    saves it) and, when distributed, `rng.augment.<rank>` for every rank (a collective)."""
    if not d.active:
        return {"rng.augment": state}
    states: list[Any] = [None] * d.world
    dist.all_gather_object(states, state.cpu(), group=d.cpu_group)
    return {"rng.augment": states[0].clone(), **{f"rng.augment.{r}": s for r, s in enumerate(states)}}


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the single-process seed; the others get their own streams."""
    return seed + rank * 7_919_000_003


def local_slice(i: int, batch: int, d: Dist) -> slice:
    """Rank r's rows of global batch i: the r-th of `world` contiguous slices."""
    per = batch // d.world
    return slice(i * batch + d.rank * per, i * batch + (d.rank + 1) * per)


def placement(n_bytes: int, free_bytes: int, fraction: float = 0.5) -> str:
    """'device' when the uint8 training set fits in `fraction` of the free GPU memory, else 'pinned'
    (host memory, each batch copied over without blocking)."""
    return "device" if n_bytes <= fraction * free_bytes else "pinned"


def collective_failed(e: BaseException, d: Dist) -> bool:
    """True when `e` is a failed collective with the other processes (most likely another rank died)."""
    return d.active and (isinstance(e, dist.DistError) or
                         any(w in str(e) for w in ("gloo", "NCCL", "Connection closed", "peer")))


def describe_failure(e: BaseException, d: Dist, checkpoint: str | None) -> str:
    """An EndEvent reason; a failed collective says that another rank has probably died."""
    text = f"{type(e).__name__}: {e}"
    if not d.active:
        return text
    first = " ".join(str(e).split())[:300]
    if collective_failed(e, d):
        last = f"; the last complete checkpoint {checkpoint} resumes with RE_TRAIN" if checkpoint else ""
        return (f"DistributedError: rank {d.rank} of {d.world}: a collective with the other processes failed, so "
                f"another rank has probably died or was killed (torchrun's report names it){last} ({first})")
    return f"{type(e).__name__}: rank {d.rank} of {d.world}: {first}"

