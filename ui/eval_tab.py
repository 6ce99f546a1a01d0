"""Evaluate tab layout: linear probe + kNN of a checkpoint beside the random-initialised baseline. A
checkpoint that carries its own report (the shipped model does) shows it at once; other runs need the
dataset. The logic is in ui/eval_handlers.py."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .eval_handlers import SIZES, EvalHandlers, EvalOut


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


def build(h: EvalHandlers, ckpt: gr.Dropdown) -> EvalTab:
    default = list(SIZES)[1 if h.studio.models.on_gpu else 0]
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
    size.change(h.size_counts, size, [n_train, n_test], api_visibility="private")
    run.click(h.evaluate, tab.inputs, tab.outputs, api_name="evaluate", concurrency_id="heavy", concurrency_limit=1)
    ckpt.input(h.stored, ckpt, tab.outputs, api_name="evaluation_stored")
    return tab
