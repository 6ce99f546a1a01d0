"""UMAP tab: the CIFAR-10 test set's features in 2-D, fitted once per checkpoint and cached on disk."""
from __future__ import annotations

import os
import time

import gradio as gr

from vicreg.checkpoint import CheckpointError
from vicreg.data import DataError
from vicreg.explore import map_points

from . import charts
from .common import NO_CHECKPOINT, esc, msg, valid_checkpoint


def build(studio, ckpt: gr.Dropdown, tabs: gr.Tabs, preset: gr.Radio, explore_state: gr.State):
    gr.Markdown(f"UMAP of the backbone features of {map_points():,} CIFAR-10 test images, coloured by class (hover for "
                "class and index). Computed once per checkpoint, then cached on disk; the fit runs in a separate "
                "process. The image you explore in the Explore tab appears as a ★, placed at the similarity-weighted "
                "mean of its 10 nearest test images' positions.")
    with gr.Column(visible=False) as no_ckpt_box:
        gr.Markdown(NO_CHECKPOINT)
        quick_btn = gr.Button("Set up the Quick CPU demo in the Train tab", variant="primary")
    run = gr.Button("Compute / show map", variant="primary", elem_id="umap-run")
    status = gr.Markdown(elem_id="umap-status")
    plot = gr.Plot(label="UMAP", elem_id="umap-plot")
    result = gr.JSON(visible=False)

    def show(checkpoint, st, progress=gr.Progress()):
        path = valid_checkpoint(checkpoint)
        if not path:
            return msg("No trained checkpoint yet, so there is no meaningful map to show.", "warn"), None, None, gr.update(visible=True)
        t0 = time.perf_counter()
        cached = studio.cached_umap(path) is not None
        try:
            coords = studio.umap(path, lambda f, d: progress(f, desc=d))
            index = studio.index(path)
        except (CheckpointError, DataError, RuntimeError, OSError) as e:
            return msg(f"Could not compute the map: {esc(e)}", "error"), None, None, gr.update(visible=False)
        marker = None
        if st and st.get("xy") and st.get("checkpoint") == path:
            marker = {"x": st["xy"][0], "y": st["xy"][1], "label": st.get("label") or "your image"}
        name = os.path.basename(path)[: -len(".safetensors")]
        fig = charts.umap_figure(coords, index.labels, index.indices, index.classes, marker)
        secs = time.perf_counter() - t0
        text = (f"**{esc(name)}**: {len(coords):,} test images · "
                + ("loaded from cache" if cached else f"computed in {secs:.0f}s and cached")
                + ("" if marker else " · explore an image to place it on the map"))
        info = {"points": int(len(coords)), "classes": index.classes, "cached": cached, "seconds": round(secs, 3), "marker": marker}
        return text, fig, info, gr.update(visible=False)

    run.click(show, [ckpt, explore_state], [status, plot, result, no_ckpt_box], api_name="umap",
              concurrency_id="heavy", concurrency_limit=1)
    quick_btn.click(lambda: (gr.Tabs(selected="train"), "Quick CPU demo"), None, [tabs, preset], api_visibility="private")
