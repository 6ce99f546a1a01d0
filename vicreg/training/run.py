"""One training run: what it holds between steps, how it is set up (fresh, resumed from a checkpoint, or
sized to a time budget) and its one training step. vicreg/training/train.py runs the epochs and emits the events.

Under torchrun every rank holds its own Run; `vicreg.core.distributed` holds the data-parallel pieces (global
batch split by rank, DDP, synced BatchNorm) and only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import IO

import torch

from ..core import distributed as ddp
from ..core.augment import n_views
from ..core.config import TrainConfig
from ..core.health import CollapseWatch
from ..core.model import VICReg
from ..core.optim import make_optimizer, set_lr
from ..core.runtime import Runtime, make_runtime
from ..runfiles.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    save_checkpoint,
    sweep_temps,
)
from ..runfiles.events import Event, to_dict
from ..runfiles.faults import Fault
from ..runfiles.metrics import open_for_append
from ..runfiles.names import checkpoint_path, metrics_path
from ..runfiles.resume import resume_config
from ..runfiles.streams import epoch_order, restore_stream
from .budget import fitted_epochs, seconds_per_step
from .data import Dataset, Split, even_subset, load_dataset
from .watch import SHARE, Watch


@dataclass
class Run:
    """Everything one training run holds between steps."""

    cfg: TrainConfig
    rt: Runtime
    data: Dataset
    images: torch.Tensor  # the training split, uint8, on the device (or pinned host memory when too large)
    model: VICReg
    fwd: torch.nn.Module  # the model, compiled or not
    opt: torch.optim.Optimizer
    gen: torch.Generator  # the augmentation stream
    steps_per_epoch: int
    total: int
    warmup: int
    out_path: str
    log: IO[str]
    knn_bank: Split
    knn_query: Split
    dist: ddp.Dist = field(default_factory=ddp.Dist)
    fault: Fault = field(default_factory=Fault)  # the test hooks (vicreg/runfiles/faults.py); none in a normal run
    step: int = 0
    start_epoch: int = 0
    in_epoch: int = 0  # steps already done inside start_epoch (a mid-epoch resume)
    metrics: dict = field(default_factory=dict)  # the latest loss terms and kNN, saved with checkpoints
    saved: str | None = None  # the last checkpoint this run wrote
    saved_at: float = 0.0  # when it wrote it (time.perf_counter), or the run started: cfg.save_every counts from it
    notes: list[str] = field(default_factory=list)
    collapse: CollapseWatch = field(default_factory=CollapseWatch)
    watch: Watch | None = None  # the learning monitor (rank 0 only)
    t0: float = 0.0  # when the run's generator started

    def emit(self, ev: Event) -> Event:
        if self.dist.main:  # the other ranks stay quiet
            line = json.dumps(to_dict(ev)) + "\n"
            self.fault.reach("log", lambda: (self.log.write(line[: len(line) // 2]), self.log.flush()))
            self.log.write(line)
            self.log.flush()
        return ev

    def save(self, epoch: int, in_epoch: int) -> str:
        # the loss is only read back every log_every steps (25 on a GPU): weights a NaN step broke since then
        # must not overwrite the last good checkpoint (one check over the parameters, only when saving)
        if not bool(torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()):
            raise FloatingPointError(f"the weights stopped being finite by step {self.step} (a NaN or Inf loss since "
                                     "the last logged step), so the last good checkpoint was kept; lower the "
                                     "learning rate (--lr)")
        # a mid-epoch stop also saves the augmentation streams (every rank's) so that resuming continues them
        meta = {"config": self.cfg.to_dict(), "epoch": epoch, "step": self.step, "step_in_epoch": in_epoch,
                "complete": epoch >= self.cfg.epochs, "metrics": self.metrics, "runtime": self.rt.describe(),
                "saved_at": time.time(), "rng_device": self.gen.device.type, "world_size": self.dist.world}
        extra = ddp.rng_states(self.gen.get_state(), self.dist) if in_epoch else None  # a collective
        if self.dist.main:
            save_checkpoint(self.out_path, self.model, self.opt, meta, extra=extra, fault=self.fault)
        self.saved, self.saved_at = self.out_path, time.perf_counter()
        return self.saved

    def batch(self, order: torch.Tensor, i: int) -> torch.Tensor:
        """This rank's slice of global batch i, on the device."""
        rows = self.images[order[ddp.local_slice(i, self.cfg.batch_size, self.dist)]]
        if rows.device.type == "cpu" and self.rt.device.type == "cuda":  # the set lives in pinned host memory
            return rows.pin_memory().to(self.rt.device, non_blocking=True)
        return rows


def setup_run(cfg: TrainConfig, resume: str | None, data: Dataset | None, d: ddp.Dist, fault: Fault) -> Run:
    """The run `cfg` asks for, or the checkpoint `resume` continued (vicreg/runfiles/resume.py), ready for its first
    step."""
    ckpt: Checkpoint | None = load_checkpoint(resume) if resume else None
    if ckpt is not None:
        cfg = resume_config(ckpt, cfg, cfg.epochs)
    cfg.validate()
    if cfg.batch_size % d.world:
        raise ValueError(f"batch_size {cfg.batch_size} is the global batch and must divide by the {d.world} processes")
    rt = make_runtime(d.device if d.active else cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    data = data or ddp.rank0_first(d, lambda: load_dataset(cfg.data, cfg.augment.size))
    images = ddp.place(even_subset(data.train, cfg.train_subset)[0].images, rt.device)
    spe = images.shape[0] // cfg.batch_size  # drop the ragged last batch: BN and covariance want full batches
    if spe < 1:
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {images.shape[0]} training images")
    total = spe * cfg.epochs
    model, fwd = build_model(cfg, rt, d)
    opt = make_optimizer(model, cfg, fused=rt.device.type == "cuda")
    out_path = checkpoint_path(cfg.checkpoint_dir, cfg.name)
    if d.main:
        os.makedirs(cfg.checkpoint_dir, exist_ok=True)
        sweep_temps(out_path)  # what a killed earlier run under this name left half-written
    run = Run(
        cfg, rt, data, images, model, fwd, opt,
        torch.Generator(device=rt.device), spe, total, min(int(cfg.warmup_epochs * spe), total // 2),
        out_path, open_for_append(metrics_path(cfg.checkpoint_dir, cfg.name)) if d.main else open(os.devnull, "a"),
        even_subset(data.train, cfg.knn_train)[0], even_subset(data.test, cfg.knn_test)[0], d, fault,
    )
    if cfg.watch_images and d.main:
        run.watch = Watch(data.test, cfg.watch_images, cfg.watch_every, cfg.augment)
    if cfg.budget_s and ckpt is None and not d.active:
        fit_budget(run)
    a = cfg.augment
    if a.views != 2 or a.full_views:  # pairs/s then counts images: each brings `views` views
        sizes = f"{a.full_views} at {a.size} px, {a.views - a.full_views} at " if a.full_views else ""
        run.notes.append(f"{a.views} views of each image, {sizes}{a.view_size or a.size} px")
    if sides := a.view_sides():
        run.notes.append(f"view sides {' → '.join(map(str, sides))} px over equal parts of the run")
    if d.active:
        run.notes.append(f"{d.world} processes ({d.backend}): global batch {cfg.batch_size} = "
                         f"{cfg.batch_size // d.world} per rank; BatchNorm synced in the projector"
                         + (" and the backbone" if cfg.sync_bn else ""))
    if ckpt is not None:
        load_model_state(model, ckpt)
        load_optimizer_state(opt, ckpt)
        run.start_epoch, run.step = ckpt.meta["epoch"], ckpt.meta["step"]
        run.in_epoch = ckpt.meta.get("step_in_epoch", 0)
        run.metrics = dict(ckpt.meta.get("metrics", {}))
        saved_world = int(ckpt.meta.get("world_size", 1))
        if saved_world != d.world:
            run.notes.append(f"the checkpoint was written by {saved_world} process(es) and resumes on {d.world}: the "
                             f"global batch stays {cfg.batch_size}, so the schedule and sample order are unchanged")
        note = restore_stream(run.gen, ckpt, d, cfg.seed) if run.in_epoch else None
        if note:
            run.notes.append(note)
    return run


def fit_budget(run: Run) -> None:
    """Epochs that fit cfg.budget_s seconds of training, from timed steps that leave no trace
    (vicreg/training/budget.py)."""
    cfg, real = run.cfg, (run.opt, run.gen)
    run.opt = make_optimizer(run.model, cfg, fused=run.rt.device.type == "cuda")  # throwaway state
    run.gen = torch.Generator(device=run.rt.device).manual_seed(cfg.seed + 1)
    order = epoch_order(run.images.shape[0], cfg.seed, 0).to(run.images.device)
    lr = cfg.scaled_lr() * 0.1

    def step(i: int) -> None:
        train_step(run, run.batch(order, i % run.steps_per_epoch), lr, cfg.augment.view_side(0, cfg.epochs))

    try:
        secs = seconds_per_step(run.model, step)
    finally:
        run.opt, run.gen = real
    epochs = fitted_epochs(cfg.budget_s, secs, run.steps_per_epoch, SHARE if cfg.watch_images else 0.0)
    run.cfg = dataclasses.replace(cfg, epochs=epochs)  # the recipe keeps its budget (with_values would drop it)
    run.total = run.steps_per_epoch * epochs
    run.warmup = min(int(cfg.warmup_epochs * run.steps_per_epoch), run.total // 2)
    if run.watch is not None:  # the monitor sizes its set to the run it watches
        run.watch.planned_s = secs * run.total
    fit = "1 epoch fits" if epochs == 1 else f"{epochs} epochs fit"
    run.notes.append(f"{fit} the {cfg.budget_s:g}-second budget here ({secs:.2f} s per step)")


def build_model(cfg: TrainConfig, rt: Runtime, d: ddp.Dist) -> tuple[VICReg, torch.nn.Module]:
    """The model, and what the loop calls: DDP around it under torchrun, compiled when asked."""
    torch.manual_seed(cfg.seed)  # weight init (the same on every rank; DDP also broadcasts rank 0's)
    model = ddp.prepare(VICReg(cfg.model), rt.device.type, cfg.sync_bn, d).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = ddp.wrap(model, rt.device, d)
    return model, torch.compile(fwd) if cfg.compile else fwd


def train_step(run: Run, batch: torch.Tensor, lr: float, side: int):
    """One optimiser step on `batch` at view side `side`: the epoch loop's, and the budget's timed steps."""
    cfg = run.cfg
    views = n_views(batch, cfg.augment, run.gen, size=side)  # cfg.augment.views of them (2: the pair it always drew)
    set_lr(run.opt, lr)
    loss_kw = dict(inv_coeff=cfg.loss.inv_coeff, var_coeff=cfg.loss.var_coeff, cov_coeff=cfg.loss.cov_coeff,
                   eps=cfg.loss.eps)
    with run.rt.autocast():
        terms, z_a, *_ = run.fwd(*map(run.rt.prepare, views), loss_kwargs=loss_kw)
    terms = run.fault.poison(terms, run.step + 1)  # the test hook's nan@STEP
    run.opt.zero_grad(set_to_none=True)
    terms.total.backward()
    run.opt.step()
    return terms, z_a
