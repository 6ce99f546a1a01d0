"""Evaluate tab: linear probe + kNN of a checkpoint, beside the random-initialised baseline."""
from __future__ import annotations

import os

import gradio as gr

from vicreg.checkpoint import CheckpointError
from vicreg.data import DataError

from . import charts
from .common import esc, msg, valid_checkpoint

SIZES = {"Quick: 10,000 train / 2,000 test": (10000, 2000), "Full: 50,000 train / 10,000 test": (0, 0)}
BASELINE = "random init"


def summary_md(results: dict[str, dict]) -> str:
    rows = ["| model | linear probe top-1 | kNN top-1 (k=200) | probe train top-1 | images (train / test) | seconds |",
            "|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {esc(name)} | **{100 * r['linear_top1']:.1f}%** | {100 * r['knn_top1']:.1f}% | "
                    f"{100 * r['train_top1']:.1f}% | {r['n_train']:,} / {r['n_test']:,} | {r['seconds']:.0f} |")
    return "\n".join(rows)


def build(studio, ckpt: gr.Dropdown):
    on_gpu = studio.rt.device.type != "cpu"
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
    run = gr.Button("Evaluate", variant="primary")
    summary = gr.Markdown(elem_id="eval-summary")
    per_class = gr.Plot(label="Per-class accuracy")
    confusion = gr.Plot(label="Confusion matrices")
    result = gr.JSON(visible=False)
    size.change(lambda s: SIZES[s], size, [n_train, n_test], api_visibility="private")

    def evaluate(checkpoint, n_train, n_test, probe_epochs, progress=gr.Progress()):
        path, ntr, nte, ep = valid_checkpoint(checkpoint), n_train, n_test, probe_epochs
        ntr, nte, ep = int(ntr or 0), int(nte or 0), int(ep or 100)
        if ntr < 0 or nte < 0 or not 1 <= ep <= 1000:
            return msg("Image counts must be 0 or more and probe epochs 1-1000.", "error"), None, None, None
        todo = [(BASELINE, None)] + ([(os.path.basename(path)[: -len(".safetensors")], path)] if path else [])
        results = {}
        try:
            for i, (name, p) in enumerate(todo):
                lo, span = i / len(todo), 1 / len(todo)
                results[name] = studio.evaluate(p, ntr, nte, ep, lambda f, d, lo=lo, span=span, name=name:
                                                progress(lo + span * f, desc=f"{name}: {d}"))
        except (CheckpointError, DataError, ValueError, RuntimeError) as e:
            return msg(f"Evaluation failed: {esc(e)}", "error"), None, None, None
        results = dict(reversed(list(results.items())))  # checkpoint first, baseline second
        classes = next(iter(results.values()))["classes"]
        note = "" if path else "\n\n" + msg("No trained checkpoint selected: only the random baseline was evaluated.", "warn")
        return (summary_md(results) + note, charts.per_class_figure(classes, results),
                charts.confusion_figure(classes, results), {"results": results})

    run.click(evaluate, [ckpt, n_train, n_test, epochs], [summary, per_class, confusion, result],
              api_name="evaluate", concurrency_id="heavy", concurrency_limit=1)
