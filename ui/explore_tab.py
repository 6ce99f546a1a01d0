"""Explore tab layout: upload or pick an image; see what the model sees (handlers: ui/explore_handlers.py)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import no_checkpoint
from .explore_handlers import ExploreHandlers
from .explore_reply import ExploreOut, RedrawOut

REFRESH_SECONDS = 2.0  # the background work's line, while it runs
STREAM = dict(concurrency_limit=16, show_progress="minimal")  # an answer mostly waits on the background work


@dataclass
class ExploreTab:
    upload: gr.File
    gallery: gr.Gallery
    test_index: gr.Number
    show: gr.Button
    views_button: gr.Button
    background: gr.Markdown
    status: gr.Markdown
    original: gr.Image
    view1: gr.Image
    params1: gr.JSON
    view2: gr.Image
    params2: gr.JSON
    embedding: gr.Image
    guess: gr.Label
    map_image: gr.Image
    neighbours: gr.HTML
    info: gr.JSON
    desc1: gr.Markdown
    desc2: gr.Markdown
    state: gr.State
    no_checkpoint: gr.Column

    @property
    def outputs(self) -> list:
        return [getattr(self, f) for f in ExploreOut._fields]


def _panels() -> dict:
    c = {}
    with gr.Row():
        c["original"] = gr.Image(label="Model input (32×32)", elem_id="explore-original", height=180)
        with gr.Column():
            c["view1"] = gr.Image(label="View 1", elem_id="explore-view1", height=180)
            c["desc1"] = gr.Markdown(elem_id="explore-params1")
        with gr.Column():
            c["view2"] = gr.Image(label="View 2", elem_id="explore-view2", height=180)
            c["desc2"] = gr.Markdown(elem_id="explore-params2")
    c["params1"], c["params2"] = gr.JSON(visible=False), gr.JSON(visible=False)
    c["views_button"] = gr.Button("Draw new views (same image, new random parameters)")
    with gr.Row():
        c["embedding"] = gr.Image(label="Backbone embedding (a cell per feature, 32 a row; white 0 → red max)",
                                  elem_id="explore-embedding")
        c["guess"] = gr.Label(label="kNN class guess (20 neighbours)", num_top_classes=3, elem_id="explore-guess")
        c["map_image"] = gr.Image(label="Position on the UMAP (✚)", elem_id="explore-map", height=380, format="png")
    c["neighbours"] = gr.HTML(elem_id="explore-neighbours")  # inline thumbnails: no file per neighbour
    c["info"] = gr.JSON(visible=False)
    return c


def _inputs() -> dict:
    c = {}
    with gr.Row():
        c["upload"] = gr.File(label="Upload an image", file_types=["image"], type="filepath", scale=1,
                              elem_id="explore-upload")
        with gr.Column(scale=2):
            c["gallery"] = gr.Gallery(label="…or pick a CIFAR-10 test image", columns=10, height=200,
                                      allow_preview=False, elem_id="explore-examples")
            with gr.Row():
                c["test_index"] = gr.Number(label="Test image #", precision=0, minimum=0, value=0)
                c["show"] = gr.Button("Show test image")
    return c


def build(h: ExploreHandlers, ckpt: gr.Dropdown, tabs: gr.Tabs, preset: gr.Radio) -> ExploreTab:
    gr.Markdown("Send one image through the model. Uploads are decoded to 32×32 RGB exactly as the model sees them "
                "(short side resized, centre-cropped). Neighbours and the map use the CIFAR-10 test images.")
    c = _inputs()
    box = no_checkpoint.box(tabs, preset)
    c["background"] = gr.Markdown(elem_id="explore-bank")
    timer = gr.Timer(REFRESH_SECONDS)
    tab = ExploreTab(**c, status=gr.Markdown(elem_id="explore-status"), **_panels(), state=gr.State(None),
                     no_checkpoint=box)
    outs, page = tab.outputs, dict(api_visibility="private", **STREAM)
    tab.upload.upload(h.upload_stream, [tab.upload, ckpt], outs, **page)
    tab.show.click(h.test_stream, [tab.test_index, ckpt], outs, **page)
    tab.test_index.submit(h.test_stream, [tab.test_index, ckpt], outs, **page)
    tab.gallery.select(h.pick, [ckpt], [tab.test_index] + outs, **page)
    api = gr.Button(visible=False)  # the API's endpoints: one complete answer per call, where the page's stream
    api.click(h.upload, [tab.upload, ckpt], outs, api_name="explore_upload", concurrency_limit=16)
    api.click(h.test_image, [tab.test_index, ckpt], outs, api_name="explore_test_image", concurrency_limit=16)
    tab.views_button.click(h.redraw, [tab.state, ckpt], [getattr(tab, f) for f in RedrawOut._fields],
                           api_name="explore_views")
    quiet = dict(api_visibility="private", show_progress="hidden")
    ckpt.change(h.follow, ckpt, [tab.background, timer], **quiet)
    timer.tick(h.background, ckpt, [tab.background, timer], **quiet)
    return tab
