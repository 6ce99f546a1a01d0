"""Evaluate tab handlers: a checkpoint's stored report, or a kNN + linear probe run beside the
random-initialised baseline (EvalReport, through services/reports.py)."""
from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr

from services.catalog import checkpoint_stem
from services.errors import EXPECTED, CheckpointError
from services.reports import EvalReport, stored_report
from services.studio import Studio

from . import charts
from .common import DATA_HELP, UNLISTED, esc, explain, failure, msg

SIZES = {"Quick: 10,000 train / 2,000 test": (10000, 2000), "Full: 50,000 train / 10,000 test": (0, 0)}
BASELINE = "random init"
NEEDS_DATA = "Evaluating a checkpoint needs the full CIFAR-10 dataset, which this server does not have. "
PROGRESS = gr.Progress()  # gradio gives each call its own tracker in place of this default


class EvalOut(NamedTuple):
    summary: Any
    per_class: Any = None
    confusion: Any = None
    result: Any = None


def summary_md(results: dict[str, EvalReport]) -> str:
    rows = ["| model | linear probe top-1 | kNN top-1 (k=200) | probe train top-1 | images (train / test) | seconds |",
            "|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {esc(name)} | **{100 * r.linear_top1:.1f}%** | {100 * r.knn_top1:.1f}% | "
                    f"{100 * r.train_top1:.1f}% | {r.n_train:,} / {r.n_test:,} | {r.seconds:.0f} |")
    return "\n".join(rows)


def report_out(results: dict[str, EvalReport], note: str = "", **extra) -> EvalOut:
    """The tab's outputs; the JSON names each report's checkpoint (None: the random baseline)."""
    as_json = {name: r.to_dict(checkpoint=None if name == BASELINE else name) for name, r in results.items()}
    classes = next(iter(results.values())).classes
    return EvalOut(summary_md(results) + (f"\n\n{note}" if note else ""), charts.per_class_figure(classes, as_json),
                   charts.confusion_figure(classes, as_json), {"results": as_json, **extra})


class EvalHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

    @staticmethod
    def size_counts(size: str) -> tuple[int, int]:
        """The Data radio's (train, test) image counts."""
        return SIZES[size]

    def stored(self, checkpoint) -> EvalOut:
        """The report a checkpoint carries, shown without computing anything."""
        path = self.studio.catalog.valid(checkpoint)
        if checkpoint and not path:
            return EvalOut(msg(UNLISTED, "warn"))
        if not path:
            return EvalOut(msg("No checkpoint selected: pick one above, or train one in the Train tab.", "info"))
        try:
            rep = stored_report(path)
        except CheckpointError as e:
            return EvalOut(failure("This checkpoint cannot be read", e, "Pick another one or train it again."))
        name = checkpoint_stem(path)
        if rep is None:
            text = f"**{esc(name)}** carries no stored evaluation: press **Evaluate** to measure it."
            if not self.studio.data.full_available():
                text += " " + NEEDS_DATA + DATA_HELP
            return EvalOut(msg(text, "info"))
        model, baseline = rep
        results = {name: model, **({BASELINE: baseline} if baseline else {})}
        note = msg(f"Stored with the checkpoint: linear probe trained {model.probe_epochs} epochs on frozen "
                   f"features of {model.n_train:,} CIFAR-10 training images, tested on {model.n_test:,}.")
        return report_out(results, note, stored=True)

    def evaluate(self, checkpoint, n_train, n_test, probe_epochs, progress=PROGRESS) -> EvalOut:
        path = self.studio.catalog.valid(checkpoint)
        if checkpoint and not path:
            return EvalOut(msg(UNLISTED, "warn"))
        ntr, nte, ep = int(n_train or 0), int(n_test or 0), int(probe_epochs or 100)
        if ntr < 0 or nte < 0 or not 1 <= ep <= 1000:
            return EvalOut(msg("Image counts must be 0 or more and probe epochs 1-1000.", "error"))
        if not self.studio.data.full_available():
            return EvalOut(msg(NEEDS_DATA + DATA_HELP, "warn"))
        todo = [(BASELINE, None)] + ([(checkpoint_stem(path), path)] if path else [])
        results = {}
        try:
            for i, (name, p) in enumerate(todo):
                results[name] = self.studio.reports.evaluate(p, ntr, nte, ep, _share(progress, i, len(todo), name))
        except EXPECTED as e:
            return EvalOut(explain("Evaluation failed", e))
        results = dict(reversed(list(results.items())))  # checkpoint first, baseline second
        note = "" if path else msg("No trained checkpoint selected: only the random baseline was evaluated.", "warn")
        return report_out(results, note)


def _share(progress, i: int, n: int, name: str):
    """The i-th of n evaluations' progress, as its share of the whole bar, its steps named."""
    return lambda f, desc: progress((i + f) / n, desc=f"{name}: {desc}")
