"""Typed events yielded by the training engine; the CLI prints them, the app's job polls them."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Union


@dataclass
class StartEvent:
    run: str
    runtime: str
    start_epoch: int
    start_step: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    n_train: int
    resumed_from: str | None
    config: dict[str, Any]
    kind: Literal["start"] = "start"
    notes: list[str] = dataclasses.field(default_factory=list)  # things the user should know (e.g. a reseed)


def rate_unit(config: dict[str, Any]) -> str:
    """What StepEvent.pairs_per_s counts, for people: pairs of views, or images when each has more views."""
    return "pairs/s" if config.get("augment", {}).get("views", 2) == 2 else "images/s"


@dataclass
class StepEvent:
    epoch: int  # 0-based epoch this step belongs to
    step: int  # global steps done (1-based)
    total_steps: int
    loss: float
    invariance: float
    variance: float
    covariance: float
    lr: float
    pairs_per_s: float  # training images per second, each with all its views (pairs when there are two)
    emb_std: float  # mean over dimensions of the per-dimension std of view-a embeddings
    eff_rank: float  # exp(entropy) of the normalised singular values of those embeddings
    elapsed: float
    kind: Literal["step"] = "step"
    warning: str | None = None  # set on the step where a collapse is first detected


@dataclass
class EpochEvent:
    epoch: int  # epochs completed
    step: int
    knn_top1: float | None
    checkpoint: str | None  # the one written at this epoch's end; None where cfg.save_every skipped it
    epoch_seconds: float
    elapsed: float
    kind: Literal["epoch"] = "epoch"


@dataclass
class WatchEvent:
    """A point of the learning monitor (vicreg/training/watch.py); step 0 is the untrained start."""

    epoch: int  # 0-based epoch the step belongs to
    step: int  # global steps done when measured
    guess: float | None  # the share of the monitor's images Explore's guess gets right (None: monitor off)
    images: int
    seconds: float  # what this measurement cost
    train_seconds: float  # training time so far, the monitor's own time left out
    elapsed: float
    kind: Literal["watch"] = "watch"
    knn_top1: float | None = None  # at step 0: the per-epoch kNN monitor's untrained figure, its chart's baseline
    # the monitor images' backbone features, float16 (N, D), and their labels: for the live map, passed
    # in memory (and between a chunked run's processes) but never written to the metrics file
    features: Any = dataclasses.field(default=None, repr=False, compare=False, metadata={"logged": False})
    labels: Any = dataclasses.field(default=None, repr=False, compare=False, metadata={"logged": False})
    classes: Any = dataclasses.field(default=None, repr=False, compare=False, metadata={"logged": False})


@dataclass
class EndEvent:
    status: Literal["finished", "stopped", "failed"]
    reason: str
    checkpoint: str | None
    epoch: int
    step: int
    elapsed: float
    kind: Literal["end"] = "end"
    # the CLI's exit status: 0 finished or stopped, 2 a failure that is the user's to fix (data, checkpoint,
    # settings), 1 any other failure (a bug); a failure is never 0
    exit_code: int = 0

    def __post_init__(self) -> None:
        if self.status == "failed" and self.exit_code == 0:
            self.exit_code = 1


Event = Union[StartEvent, StepEvent, EpochEvent, WatchEvent, EndEvent]


def to_dict(ev: Event) -> dict[str, Any]:
    """The event as its metrics-file line holds it (fields marked not logged left out)."""
    logged = (f.name for f in dataclasses.fields(ev) if f.metadata.get("logged", True))
    return {name: copy.deepcopy(getattr(ev, name)) for name in logged}
