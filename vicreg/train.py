"""The training engine: one generator of typed events, consumed by the CLI and by the app's job.

Resume is exact: the epoch's sample order is a pure function of (seed, epoch), the augmentation
generator's state is checkpointed, the lr is a pure function of the step, and the optimiser state
travels in the checkpoint. So stopping anywhere and resuming gives the same weights as not stopping.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from typing import Iterator

import torch

from .augment import two_views
from .checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    resume_config,
    safe_name,
    save_checkpoint,
)
from .config import TrainConfig
from .data import Dataset, even_subset, load_dataset
from .evaluate import extract_features, knn_accuracy
from .events import EndEvent, EpochEvent, Event, StartEvent, StepEvent, to_dict
from .model import VICReg
from .optim import lr_at, make_optimizer, set_lr
from .runtime import make_runtime


def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values (Roy & Vetterli, 2007): ~batch size for
    well-spread embeddings, falls towards 1 as they collapse onto a few directions."""
    s = torch.linalg.svdvals((z - z.mean(0)).float())
    p = s / s.sum().clamp_min(1e-12)
    return math.exp(-(p * (p + 1e-12).log()).sum().item())


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def metrics_path(cfg: TrainConfig) -> str:
    return os.path.join(cfg.checkpoint_dir, safe_name(cfg.name) + ".metrics.jsonl")


def train(
    cfg: TrainConfig,
    stop: threading.Event | None = None,
    resume: str | None = None,
    data: Dataset | None = None,
) -> Iterator[Event]:
    """Yield a StartEvent, StepEvents, an EpochEvent per epoch, and always one final EndEvent.

    `resume` is a checkpoint path; `checkpoint.resume_config` decides what comes from it and what
    from `cfg` (cfg.epochs is the run's total). Setting `stop` ends the run after the current step
    with a resumable checkpoint.
    """
    stop = stop or threading.Event()
    t0 = time.perf_counter()
    state = {"epoch": 0, "step": 0, "ckpt": None}
    try:
        yield from _train(cfg, stop, resume, data, t0, state)
    except Exception as e:  # the generator's contract: every run ends with an EndEvent
        yield EndEvent("failed", f"{type(e).__name__}: {e}", state["ckpt"], state["epoch"], state["step"], time.perf_counter() - t0)


def _train(cfg: TrainConfig, stop: threading.Event, resume: str | None, data: Dataset | None, t0: float, state: dict) -> Iterator[Event]:
    ckpt = None
    if resume:
        ckpt = load_checkpoint(resume)
        cfg = resume_config(ckpt, cfg, cfg.epochs)
    cfg.validate()
    rt = make_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    data = data or load_dataset(cfg.data, cfg.augment.size)
    train_split, _ = even_subset(data.train, cfg.train_subset)
    images = train_split.images.to(rt.device)  # whole set on the device as uint8
    n = images.shape[0]
    spe = n // cfg.batch_size  # drop the ragged last batch: BN and covariance want full batches
    if spe < 1:
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {n} training images")
    total = spe * cfg.epochs
    warmup = min(int(cfg.warmup_epochs * spe), total // 2)

    torch.manual_seed(cfg.seed)  # weight init
    model = VICReg(cfg.model).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg, fused=rt.device.type == "cuda")
    gen = torch.Generator(device=rt.device)
    start_epoch, step, in_epoch = 0, 0, 0
    if ckpt is not None:
        load_model_state(model, ckpt)
        load_optimizer_state(opt, ckpt)
        start_epoch, step, in_epoch = ckpt.meta["epoch"], ckpt.meta["step"], ckpt.meta.get("step_in_epoch", 0)
        if in_epoch and "rng.augment" in ckpt.tensors:
            gen.set_state(ckpt.tensors["rng.augment"].cpu())
    fwd = torch.compile(model) if cfg.compile else model
    loss_kw = dict(inv_coeff=cfg.loss.inv_coeff, var_coeff=cfg.loss.var_coeff, cov_coeff=cfg.loss.cov_coeff, eps=cfg.loss.eps)
    log_every = cfg.log_every or (1 if rt.device.type == "cpu" else 25)
    out_path = checkpoint_path(cfg.checkpoint_dir, cfg.name)
    os.makedirs(cfg.checkpoint_dir, exist_ok=True)
    log = open(metrics_path(cfg), "a")
    (knn_bank, _), (knn_query, _) = even_subset(data.train, cfg.knn_train), even_subset(data.test, cfg.knn_test)

    def emit(ev: Event) -> Event:
        log.write(json.dumps(to_dict(ev)) + "\n")
        log.flush()
        return ev

    def save(epoch: int, in_ep: int, metrics: dict) -> str:
        # a mid-epoch stop also saves the augmentation stream so that resuming continues it
        state["ckpt"] = save_checkpoint(
            out_path, model, opt,
            {"config": cfg.to_dict(), "epoch": epoch, "step": step, "step_in_epoch": in_ep,
             "complete": epoch >= cfg.epochs, "metrics": metrics, "runtime": rt.describe(), "saved_at": time.time()},
            extra={"rng.augment": gen.get_state()} if in_ep else None,
        )
        return state["ckpt"]

    try:
        yield emit(StartEvent(cfg.name, rt.describe(), start_epoch, step, cfg.epochs, spe, total, n, resume, cfg.to_dict()))
        model.train()
        last_metrics: dict = dict(ckpt.meta.get("metrics", {})) if ckpt else {}
        for epoch in range(start_epoch, cfg.epochs):
            state["epoch"] = epoch
            order = _epoch_order(n, cfg.seed, epoch).to(rt.device)
            if in_epoch == 0:
                gen.manual_seed(cfg.seed * 100_003 + epoch + 1)
            t_epoch = t_win = time.perf_counter()
            win_steps = 0
            for i in range(in_epoch, spe):
                if stop.is_set():
                    path = save(epoch, i, last_metrics)
                    yield emit(EndEvent("stopped", f"stopped at epoch {epoch + 1}, step {i}/{spe}", path, epoch, step, time.perf_counter() - t0))
                    return
                batch = images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
                v_a, v_b = two_views(batch, cfg.augment, gen)
                lr = lr_at(step, total, warmup, cfg.scaled_lr(), cfg.min_lr_ratio)
                set_lr(opt, lr)
                with rt.autocast():
                    terms, z_a, _ = fwd(rt.prepare(v_a), rt.prepare(v_b), loss_kw)
                opt.zero_grad(set_to_none=True)
                terms.total.backward()
                opt.step()
                step += 1
                state["step"] = step
                win_steps += 1
                if step % log_every == 0 or i == spe - 1:
                    vals = torch.stack([t.detach().float() for t in terms]).tolist()  # one sync per log
                    if not math.isfinite(vals[0]):
                        raise FloatingPointError(f"loss became {vals[0]} at step {step}; lower the learning rate (--lr)")
                    now = time.perf_counter()
                    zf = z_a.detach().float()
                    yield emit(StepEvent(
                        epoch, step, total, *vals, lr,
                        win_steps * cfg.batch_size / max(now - t_win, 1e-9),
                        zf.std(0).mean().item(), effective_rank(zf), now - t0,
                    ))
                    t_win, win_steps = time.perf_counter(), 0
            in_epoch = 0
            knn = None
            if cfg.knn_test > 0:
                bank = extract_features(model.backbone, knn_bank.images, rt, cfg.augment)
                query = extract_features(model.backbone, knn_query.images, rt, cfg.augment)
                knn = knn_accuracy(bank, knn_bank.labels, query, knn_query.labels, len(data.classes))
            last_metrics = {"knn_top1": knn, "loss": vals[0], "invariance": vals[1], "variance": vals[2], "covariance": vals[3]}
            path = save(epoch + 1, 0, last_metrics)
            yield emit(EpochEvent(epoch + 1, step, knn, path, time.perf_counter() - t_epoch, time.perf_counter() - t0))
        state["epoch"] = cfg.epochs
        yield emit(EndEvent("finished", f"trained {cfg.epochs} epochs", state["ckpt"], cfg.epochs, step, time.perf_counter() - t0))
    finally:
        log.close()
