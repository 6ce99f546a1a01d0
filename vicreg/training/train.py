"""The training engine: one generator of typed events, consumed by the CLI and by the app's job.

Resume is exact: the epoch's sample order is a pure function of (seed, epoch), the augmentation
generator's state is checkpointed (vicreg/runfiles/streams.py), the lr is a pure function of the step, and the
optimiser state travels in the checkpoint. So stopping anywhere and resuming gives the same weights as not stopping.

Under torchrun every rank runs this generator; `vicreg.core.distributed` holds the data-parallel pieces
(global batch split by rank, DDP, synced BatchNorm, stop agreement) and only rank 0 writes files. What a run
holds, how it is set up and its one step are in vicreg/training/run.py; this file runs its epochs.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Iterator

import torch

from ..core import distributed as ddp
from ..core.config import TrainConfig
from ..core.health import effective_rank
from ..core.optim import lr_at
from ..runfiles.events import EndEvent, EpochEvent, Event, StartEvent, StepEvent, WatchEvent
from ..runfiles.faults import from_env
from ..runfiles.names import CheckpointError
from ..runfiles.streams import epoch_order, start_epoch_stream
from .data import DataError, Dataset
from .evaluate import extract_features, knn_accuracy
from .precise_bn import recalibrate_bn
from .run import Run, setup_run, train_step

# Failures that are the user's to fix (bad data, checkpoint or settings): EndEvent.exit_code 2, else 1.
USER_ERRORS = (DataError, CheckpointError, ValueError, FileNotFoundError, FloatingPointError)


def train(
    cfg: TrainConfig,
    stop: threading.Event | None = None,
    resume: str | None = None,
    data: Dataset | None = None,
) -> Iterator[Event]:
    """Yield a StartEvent, StepEvents, an EpochEvent per epoch, and always one final EndEvent.

    `resume` is a checkpoint path; `resume.resume_config` decides what comes from it and what
    from `cfg` (cfg.epochs is the run's total). Setting `stop` ends the run after the current step
    with a resumable checkpoint.
    """
    stop = stop or threading.Event()
    t0 = time.perf_counter()
    run, d = None, ddp.Dist()
    try:
        fault = from_env()
        d = ddp.setup(cfg.device)
        run = setup_run(cfg, resume, data, d, fault)
        yield from _loop(run, stop, resume, t0)
    except Exception as e:  # the generator's contract: every run ends with an EndEvent
        ckpt, epoch, step = (run.saved, run.start_epoch, run.step) if run is not None else (None, 0, 0)
        code = 2 if isinstance(e, USER_ERRORS) and not ddp.collective_failed(e, d) else 1
        end = EndEvent("failed", ddp.describe_failure(e, d, ckpt), ckpt, epoch, step, time.perf_counter() - t0,
                       exit_code=code)
        if run is not None:  # the metrics file records the failure too (a NaN names its step there)
            try:
                run.emit(end)
            except (OSError, ValueError):  # the log itself may be what failed
                pass
        yield end
    finally:
        if run is not None:
            run.log.close()
        ddp.teardown(d)


def _loop(run: Run, stop: threading.Event, resume: str | None, t0: float) -> Iterator[Event]:
    cfg = run.cfg
    yield run.emit(StartEvent(cfg.name, run.rt.describe(), run.start_epoch, run.step, cfg.epochs, run.steps_per_epoch,
                              run.total, run.images.shape[0], resume, cfg.to_dict(), notes=list(run.notes)))
    run.model.train()
    run.t0 = run.saved_at = t0
    if run.step == 0 and run.dist.main and not stop.is_set() and (run.watch is not None or cfg.knn_test > 0):
        # the untrained start, measured by the run's own monitors: the charts' baseline (seconds of forward passes
        # at full scale, skipped when a stop came during setup, so that the stop is prompt)
        yield run.emit(_watch_event(run, 0, knn=_knn_monitor(run)))
    recalibrated = False
    for epoch in range(run.start_epoch, cfg.epochs):
        run.start_epoch = epoch
        t_epoch = time.perf_counter()
        stopped_at = yield from _epoch(run, epoch, stop, t0)
        if stopped_at is not None:
            path = run.save(epoch, stopped_at)
            reason = f"stopped at epoch {epoch + 1}, step {stopped_at}/{run.steps_per_epoch}"
            yield run.emit(EndEvent("stopped", reason, path, epoch, run.step, time.perf_counter() - t0))
            return
        run.in_epoch = 0
        recalibrated = epoch + 1 == cfg.epochs and _precise_bn(run)  # before the last save and measurements
        run.metrics["knn_top1"] = _knn_monitor(run)
        path = None
        if epoch + 1 == cfg.epochs or time.perf_counter() - run.saved_at >= cfg.save_every:
            path = run.save(epoch + 1, 0)
            run.fault.reach("epoch_end")
        yield run.emit(EpochEvent(epoch + 1, run.step, run.metrics["knn_top1"], path, time.perf_counter() - t_epoch,
                                  time.perf_counter() - t0))
    run.start_epoch = cfg.epochs
    if run.watch is not None and (recalibrated or run.watch.step != run.step):  # the figure the run ends with
        yield run.emit(_watch_event(run, cfg.epochs - 1))
    yield run.emit(EndEvent("finished", f"trained {cfg.epochs} epochs", run.saved, cfg.epochs, run.step,
                            time.perf_counter() - t0))


def _epoch(run: Run, epoch: int, stop: threading.Event, t0: float):
    """One epoch's steps (StepEvents every log_every steps); returns the in-epoch step at which a
    stop was requested, or None when the epoch completed."""
    cfg = run.cfg
    order = epoch_order(run.images.shape[0], cfg.seed, epoch).to(run.images.device)
    if run.in_epoch == 0:
        start_epoch_stream(run.gen, cfg.seed, epoch, run.dist)
    log_every = cfg.log_every or (1 if run.rt.device.type == "cpu" else 25)  # each read-back syncs a GPU
    t_win, win_steps = time.perf_counter(), 0
    for i in range(run.in_epoch, run.steps_per_epoch):
        run.fault.at_step(run.dist.rank, run.step, stop)
        if ddp.agree(stop.is_set(), run.dist):  # every rank stops at the same step
            return i
        batch = run.batch(order, i)
        lr = lr_at(run.step, run.total, run.warmup, cfg.scaled_lr(), cfg.min_lr_ratio)
        terms, z_a = train_step(run, batch, lr, cfg.augment.view_side(epoch, cfg.epochs))
        run.step += 1
        run.fault.reach("after_step")
        win_steps += 1
        if run.step % log_every == 0 or i == run.steps_per_epoch - 1:
            zf = z_a.detach().float()
            health = [zf.std(0).mean(), effective_rank(zf)]
            stacked = torch.stack([t.detach().float() for t in terms] + health)
            *vals, emb_std, eff_rank = ddp.mean_over_ranks(stacked, run.dist).tolist()  # one sync
            if not math.isfinite(vals[0]):
                raise FloatingPointError(f"loss became {vals[0]} at step {run.step}; lower the learning rate (--lr)")
            run.metrics.update(loss=vals[0], invariance=vals[1], variance=vals[2], covariance=vals[3])
            now = time.perf_counter()
            pairs_per_s = win_steps * cfg.batch_size / max(now - t_win, 1e-9)
            yield run.emit(StepEvent(epoch, run.step, run.total, *vals, lr, pairs_per_s, emb_std, eff_rank, now - t0,
                                     warning=run.collapse.update(run.step, emb_std, eff_rank)))
            t_win, win_steps = time.perf_counter(), 0
        if run.watch is not None and run.watch.due():
            yield run.emit(_watch_event(run, epoch))
            t_win, win_steps = time.perf_counter(), 0  # the rate counts training only
    return None


def _precise_bn(run: Run) -> bool:
    """The finished backbone's BatchNorm statistics from clean training images (every rank the same ones, so ranks
    that sync BatchNorm stay in step); whether any were re-estimated."""
    if run.cfg.precise_bn <= 0:
        return False
    return recalibrate_bn(run.model.backbone, run.images, run.rt, run.cfg.augment, run.cfg.precise_bn) > 0


def _watch_event(run: Run, epoch: int, knn: float | None = None) -> WatchEvent:
    """A point of the learning monitor (None when it is off) with, at the start, the kNN monitor's baseline."""
    elapsed = time.perf_counter() - run.t0
    if run.watch is None:
        return WatchEvent(epoch, run.step, None, 0, 0.0, elapsed, elapsed, knn_top1=knn)
    m = run.watch.measure(run.model.backbone, run.rt, len(run.data.classes))
    run.metrics["guess"] = m.guess
    run.watch.step = run.step
    elapsed = time.perf_counter() - run.t0
    return WatchEvent(epoch, run.step, m.guess, len(run.watch.labels), m.seconds, elapsed - run.watch.spent, elapsed,
                      knn_top1=knn, features=m.features, labels=run.watch.labels, classes=list(run.data.classes))


def _knn_monitor(run: Run) -> float | None:
    """Per-epoch kNN top-1 of the backbone on small train/test subsets (None when disabled)."""
    if run.cfg.knn_test <= 0 or not run.dist.main:
        return None
    bank = extract_features(run.model.backbone, run.knn_bank.images, run.rt, run.cfg.augment)
    run.fault.reach("knn")
    query = extract_features(run.model.backbone, run.knn_query.images, run.rt, run.cfg.augment)
    return knn_accuracy(bank, run.knn_bank.labels, query, run.knn_query.labels, len(run.data.classes))
