"""Evaluate tab: linear probe + kNN of a checkpoint beside the random-initialised baseline. A checkpoint
that carries its own report (the shipped model does) shows it at once; other runs need the dataset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from services.reports import stored_report
from services.studio import Studio
from vicreg.checkpoint import CheckpointError, checkpoint_stem
from vicreg.data import DataError

from . import charts
from .common import DATA_HELP, UNLISTED, esc, explain, failure, msg

SIZES = {"Quick: 10,000 train / 2,000 test": (10000, 2000), "Full: 50,000 train / 10,000 test": (0, 0)}
BASELINE = "random init"
NEEDS_DATA = "Evaluating a checkpoint needs the full CIFAR-10 dataset, which this server does not have. "


class EvalOut(NamedTuple):
    summary: Any
    per_class: Any = None
    confusion: Any = None
    result: Any = None


@dataclass
class EvalTab:
    checkpoint: gr.Dropdown  # the header's
    size: gr.Radio
    n_train: gr.Number
    n_test: gr.Number
    epochs: gr.Number
    run: gr.Button
    summary: gr.Markdown
    per_class: gr.Plot
    confusion: gr.Plot
    result: gr.JSON

    @property
    def inputs(self) -> list:
        return [self.checkpoint, self.n_train, self.n_test, self.epochs]

    @property
    def outputs(self) -> list:
        return [getattr(self, f) for f in EvalOut._fields]


def size_counts(size: str) -> tuple[int, int]:
    """The Data radio's (train, test) image counts."""
    return SIZES[size]


def summary_md(results: dict[str, dict]) -> str:
    rows = ["| model | linear probe top-1 | kNN top-1 (k=200) | probe train top-1 | images (train / test) | seconds |",
            "|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {esc(name)} | **{100 * r['linear_top1']:.1f}%** | {100 * r['knn_top1']:.1f}% | "
                    f"{100 * r['train_top1']:.1f}% | {r['n_train']:,} / {r['n_test']:,} | {r['seconds']:.0f} |")
    return "\n".join(rows)


def report_out(results: dict[str, dict], note: str = "", **extra) -> EvalOut:
    classes = next(iter(results.values()))["classes"]
    return EvalOut(summary_md(results) + (f"\n\n{note}" if note else ""), charts.per_class_figure(classes, results),
                   charts.confusion_figure(classes, results), {"results": results, **extra})


class EvalHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

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
        note = msg(f"Stored with the checkpoint: linear probe trained {model['probe_epochs']} epochs on frozen "
                   f"features of {model['n_train']:,} CIFAR-10 training images, tested on {model['n_test']:,}.")
        return report_out(results, note, stored=True)

    def evaluate(self, checkpoint, n_train, n_test, probe_epochs, progress=gr.Progress()) -> EvalOut:
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
                lo, span = i / len(todo), 1 / len(todo)
                results[name] = self.studio.reports.evaluate(
                    p, ntr, nte, ep, lambda f, d, lo=lo, span=span, n=name: progress(lo + span * f, desc=f"{n}: {d}"))
        except (CheckpointError, DataError, ValueError, RuntimeError, OSError) as e:
            return EvalOut(explain("Evaluation failed", e))
        results = dict(reversed(list(results.items())))  # checkpoint first, baseline second
        note = "" if path else msg("No trained checkpoint selected: only the random baseline was evaluated.", "warn")
        return report_out(results, note)


def build(h: EvalHandlers, ckpt: gr.Dropdown) -> EvalTab:
    on_gpu = h.studio.models.rt.device.type != "cpu"
    default = list(SIZES)[1 if on_gpu else 0]
    gr.Markdown("Frozen-backbone evaluation on CIFAR-10: features are extracted once, then a weighted kNN "
                "classifier and a linear probe (100 epochs on standardised features) are fitted. The random-"
                "initialised network is evaluated the same way beside it (computed once, then cached). "
                "Full-size extraction takes about 3 minutes on a CPU, hence the quick default.")
    with gr.Row():
        size = gr.Radio(list(SIZES), value=default, label="Data", scale=3)
        n_train = gr.Number(SIZES[default][0], label="Train images (0 = all)", precision=0, minimum=0)
        n_test = gr.Number(SIZES[default][1], label="Test images (0 = all)", precision=0, minimum=0)
        epochs = gr.Number(100, label="Probe epochs", precision=0, minimum=1, maximum=1000)
    run = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
    summary = gr.Markdown(elem_id="eval-summary")
    per_class = gr.Plot(label="Per-class accuracy", elem_id="eval-per-class")
    confusion = gr.Plot(label="Confusion matrices", elem_id="eval-confusion")
    result = gr.JSON(visible=False)
    tab = EvalTab(ckpt, size, n_train, n_test, epochs, run, summary, per_class, confusion, result)
    size.change(size_counts, size, [n_train, n_test], api_visibility="private")
    run.click(h.evaluate, tab.inputs, tab.outputs, api_name="evaluate", concurrency_id="heavy", concurrency_limit=1)
    ckpt.input(h.stored, ckpt, tab.outputs, api_name="evaluation_stored")
    return tab
