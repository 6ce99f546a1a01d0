"""Explore tab layout: upload or pick an image; see what the model sees."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .common import NO_CHECKPOINT
from .explore_handlers import ExploreHandlers, ExploreOut, RedrawOut


@dataclass
class ExploreTab:
    upload: gr.File
    gallery: gr.Gallery
    test_index: gr.Number
    show: gr.Button
    views_button: gr.Button
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
    c["views_btn"] = gr.Button("Draw new views (same image, new random parameters)")
    with gr.Row():
        c["embedding"] = gr.Image(label="512-d backbone embedding (16×32 cells, white 0 → red max)",
                                  elem_id="explore-embedding")
        c["guess"] = gr.Label(label="kNN class guess (20 neighbours)", num_top_classes=3, elem_id="explore-guess")
        c["map_image"] = gr.Image(label="Position on the UMAP (✚)", elem_id="explore-map", height=380, format="png")
    c["neighbours"] = gr.HTML(elem_id="explore-neighbours")  # inline thumbnails: no file per neighbour
    c["info"] = gr.JSON(visible=False)
    return c


def build(h: ExploreHandlers, ckpt: gr.Dropdown, tabs: gr.Tabs, preset: gr.Radio) -> ExploreTab:
    gr.Markdown("Send one image through the model. Uploads are decoded to 32×32 RGB exactly as the model sees them "
                "(short side resized, centre-cropped). Neighbours and the map use the CIFAR-10 test images.")
    with gr.Row():
        upload = gr.File(label="Upload an image", file_types=["image"], type="filepath", scale=1,
                         elem_id="explore-upload")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="…or pick a CIFAR-10 test image", columns=10, height=200, allow_preview=False,
                                 elem_id="explore-examples")
            with gr.Row():
                test_idx = gr.Number(label="Test image #", precision=0, minimum=0, value=0)
                show_btn = gr.Button("Show test image")
    with gr.Column(visible=False) as no_ckpt_box:
        gr.Markdown(NO_CHECKPOINT)
        quick_btn = gr.Button("Set up the Quick CPU demo in the Train tab", variant="primary")
    c = {"status": gr.Markdown(elem_id="explore-status"), **_panels(), "state": gr.State(None),
         "no_checkpoint": no_ckpt_box}
    views_btn = c.pop("views_btn")
    tab = ExploreTab(upload, gallery, test_idx, show_btn, views_btn, **c)
    outs = tab.outputs
    upload.upload(h.upload, [upload, ckpt], outs, api_name="explore_upload", concurrency_limit=4)
    show_btn.click(h.test_image, [test_idx, ckpt], outs, api_name="explore_test_image", concurrency_limit=4)
    test_idx.submit(h.test_image, [test_idx, ckpt], outs, api_visibility="private", concurrency_limit=4)
    gallery.select(h.pick, [ckpt], [test_idx] + outs, api_visibility="private", concurrency_limit=4)
    views_btn.click(h.redraw, [tab.state, ckpt], [getattr(tab, f) for f in RedrawOut._fields],
                    api_name="explore_views")
    quick_btn.click(h.quick, None, [tabs, preset], api_visibility="private")
    return tab
