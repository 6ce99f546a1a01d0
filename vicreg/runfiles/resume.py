"""The one resume rule, shared by the CLI, the app and the trainer: what a resumed run takes from its
checkpoint (the recipe) and what from the caller (the run's own settings), and how long it runs."""
from __future__ import annotations

import dataclasses
import os

from ..core.config import TrainConfig
from .checkpoint import RUN_FIELDS, Checkpoint
from .names import CheckpointError, checkpoint_stem, safe_name

__all__ = ["RUN_FIELDS", "more_epochs", "resume_config", "resume_run"]


def resume_config(ckpt: Checkpoint, run: TrainConfig, epochs: int | None = None) -> TrainConfig:
    """The checkpoint's recipe (model, loss, augmentation with its number of views, optimiser, schedule
    shape, data subset, seed) with the caller's RUN_FIELDS: a recipe field never changes on a resume.

    `epochs` is the run's new total: None finishes the planned run, which is exact (the same weights
    as never stopping). A larger total continues the same schedule as if it had been planned that
    long from the start: the warm-up the trainer computes for the new total (warmup_epochs, capped at
    half the run), then the cosine stretched to the new last step, so the lr rises again at the
    resume. `more_epochs` turns "N more epochs" into that total.
    """
    ckpt.require_resumable()
    cfg = TrainConfig.from_dict({**ckpt.meta["config"], **{k: getattr(run, k) for k in RUN_FIELDS}})
    cfg.epochs = int(epochs) if epochs is not None else cfg.epochs
    done = int(ckpt.meta.get("epoch", 0))
    if done >= cfg.epochs:
        raise CheckpointError(f"{checkpoint_stem(ckpt.path)} has finished its {done} planned epochs; "
                              "ask for more epochs to train further (RE_TRAIN --epochs N trains N more)")
    return cfg.validate()


def more_epochs(ckpt: Checkpoint, n: int) -> int:
    """The total that trains `n` more epochs from where the checkpoint stands (a checkpoint saved
    inside an epoch finishes that epoch as the first of the n)."""
    if n < 1:
        raise CheckpointError(f"the number of extra epochs must be at least 1, got {n}")
    return int(ckpt.meta.get("epoch", 0)) + n


def resume_run(ckpt: Checkpoint, run: TrainConfig, name: str | None = None, checkpoint_dir: str | None = None,
               more: int | None = None) -> TrainConfig:
    """How RE_TRAIN and the app's Resume continue `ckpt`: `resume_config` of it with the caller's run settings
    `run`, saved as `name` (default: the checkpoint's own name) in `checkpoint_dir` (default: the checkpoint's
    own folder when it keeps its name, else `run`'s), for `more` more epochs (None: finish the planned run)."""
    if checkpoint_dir is None:
        checkpoint_dir = run.checkpoint_dir if name else (os.path.dirname(ckpt.path) or ".")
    run = dataclasses.replace(run, name=safe_name(name) if name else checkpoint_stem(ckpt.path),
                              checkpoint_dir=checkpoint_dir)
    return resume_config(ckpt, run, more_epochs(ckpt, more) if more is not None else None)
