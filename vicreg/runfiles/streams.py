"""The run's random streams, the half of exact resume that is not the optimiser: the epoch's sample
order is a pure function of (seed, epoch), each epoch's augmentation generator starts from a seed of
(seed, epoch, rank), and a checkpoint saved inside an epoch carries the generators' states
(`distributed.rng_states`) so that the resumed epoch draws what the uninterrupted one would have."""
from __future__ import annotations

import torch

from ..core import distributed as ddp
from .checkpoint import Checkpoint


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch `epoch` visits the `n` training images (the same on every rank)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def start_epoch_stream(gen: torch.Generator, seed: int, epoch: int, d: ddp.Dist) -> None:
    """Seed this rank's augmentation generator for the start of epoch `epoch`."""
    gen.manual_seed(ddp.rank_seed(seed * 100_003 + epoch + 1, d.rank))


def restore_stream(gen: torch.Generator, ckpt: Checkpoint, d: ddp.Dist, seed: int) -> str | None:
    """Continue a mid-epoch checkpoint's augmentation stream (this rank's). A generator's state only
    fits a generator of the same device kind (CPU and CUDA states differ in size), and the streams
    only fit the same number of processes, so otherwise it reseeds deterministically from (seed, epoch,
    step, rank): reproducible, but not the stream the uninterrupted run would have drawn. Returns a note
    for the user when it reseeded."""
    saved_kind, saved_world = ckpt.meta.get("rng_device", "cpu"), int(ckpt.meta.get("world_size", 1))
    epoch, step = ckpt.meta["epoch"], ckpt.meta["step"]
    key = f"rng.augment.{d.rank}" if d.active else "rng.augment"
    if key in ckpt.tensors and saved_kind == gen.device.type and saved_world == d.world:
        gen.set_state(ckpt.tensors[key].cpu())
        return None
    gen.manual_seed(ddp.rank_seed((seed * 100_003 + epoch) * 1_000_003 + step, d.rank))
    why = (f"saved on {saved_kind} and this run is on {gen.device.type}" if saved_kind != gen.device.type
           else f"saved by {saved_world} process(es) and this run has {d.world}")
    return (f"the checkpoint's augmentation stream was {why}: reseeded from (seed, epoch, step), so the rest of "
            f"epoch {epoch + 1} sees different (equally random) augmentations than an uninterrupted run")
