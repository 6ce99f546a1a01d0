"""UMAP tab layout: the test images' features in 2-D (handlers: ui/umap_handlers.py)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import no_checkpoint
from .umap_handlers import UmapHandlers, UmapOut

REFRESH_SECONDS = 2.0  # while the map shown is not the checkpoint's own: its progress, then the map


@dataclass
class UmapTab:
    checkpoint: gr.Dropdown  # the header's
    explore_state: gr.State  # the Explore tab's image, shown as a star
    run: gr.Button
    status: gr.Markdown
    plot: gr.Plot
    result: gr.JSON
    no_checkpoint: gr.Column

    @property
    def inputs(self) -> list:
        return [self.checkpoint, self.explore_state]

    @property
    def outputs(self) -> list:
        return [getattr(self, f) for f in UmapOut._fields]


def build(h: UmapHandlers, ckpt: gr.Dropdown, tabs: gr.Tabs, preset: gr.Radio, explore_state: gr.State) -> UmapTab:
    gr.Markdown("UMAP of the backbone features of the test images, coloured by class (hover for class and index). "
                "A checkpoint's map is built in the background once it is selected (the features in a separate "
                "process, then the fit), then cached on disk; until then the embedded sample's map shows, when there "
                "is one. The image you explore in the Explore tab appears as a ★, placed at the similarity-weighted "
                "mean of its 10 nearest test images' positions.")
    box = no_checkpoint.box(tabs, preset)
    run = gr.Button("Compute / show map", variant="primary", elem_id="umap-run")
    status = gr.Markdown(elem_id="umap-status")
    plot = gr.Plot(label="UMAP", elem_id="umap-plot")
    result = gr.JSON(visible=False)
    timer = gr.Timer(REFRESH_SECONDS)
    tab = UmapTab(ckpt, explore_state, run, status, plot, result, box)
    run.click(h.show, tab.inputs, tab.outputs, api_name="umap", concurrency_id="heavy", concurrency_limit=1)
    ckpt.input(h.preview, tab.inputs, tab.outputs, api_name="umap_preview")
    ckpt.change(lambda: gr.Timer(active=True), None, timer, api_visibility="private", show_progress="hidden")
    timer.tick(h.tick, [*tab.inputs, result], [*tab.outputs, timer], api_visibility="private", show_progress="hidden")
    return tab
