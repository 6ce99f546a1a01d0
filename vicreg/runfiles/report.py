"""An evaluation's report, one shape for every reader: what EVALUATE prints and writes (`--output`), what
the app computes, caches and shows, and what a checkpoint stores in its metadata under "report" (with
its random-initialised baseline's under "report"/"baseline"). No torch here: the app's checkpoint list
reads it too."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class EvalReport:
    linear_top1: float  # linear probe on frozen features, test top-1
    knn_top1: float  # weighted kNN (k=200, T=0.1) on the same features
    train_top1: float  # the probe on its own training features (how far it over-fits)
    per_class: list[float]  # the probe's test top-1 per class
    confusion: list[list[int]]  # the probe's test predictions: rows true class, columns predicted
    classes: list[str]
    n_train: int
    n_test: int
    probe_epochs: int
    seconds: float

    def to_dict(self, **about: Any) -> dict[str, Any]:
        """The JSON form; `about` names what was evaluated (the CLI: model and runtime, the app: checkpoint)."""
        return {**about, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: Any) -> EvalReport | None:
        """The report in a JSON object (other keys ignored), or None when it is not one."""
        keys = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or not set(keys) <= set(d):
            return None
        return cls(**{k: d[k] for k in keys})

    def line(self) -> str:
        """The two headline figures and the time, as the CLI prints them."""
        return (f"linear probe top-1 {self.linear_top1:.2%} (train {self.train_top1:.2%}), "
                f"kNN (k=200, T=0.1) top-1 {self.knn_top1:.2%} [{self.seconds:.0f}s]")


REPORT_KEYS = tuple(f.name for f in dataclasses.fields(EvalReport))  # the figures, without what was evaluated
