"""UMAP tab: the test images' features in 2-D. The default model's map over the embedded sample is
shown at once; other maps are fitted once per checkpoint (in a child process) and cached on disk."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from gradio.components.plot import PlotData

from services.lru import Lru
from services.studio import Studio
from vicreg.checkpoint import CheckpointError, checkpoint_stem
from vicreg.data import DataError

from . import charts
from .common import NO_CHECKPOINT, UNLISTED, esc, explain, msg
from .explore_handlers import ExploreHandlers


class UmapOut(NamedTuple):
    status: Any
    plot: Any = None
    result: Any = None
    no_checkpoint: Any = gr.skip()  # a layout block: None is not a valid value for it


NO_MAP = UmapOut(msg("No trained checkpoint yet, so there is no meaningful map to show.", "warn"),
                 no_checkpoint=gr.update(visible=True))


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


def _marker(st, path) -> dict | None:
    if st and st.get("xy") and st.get("checkpoint") == path:
        return {"x": st["xy"][0], "y": st["xy"][1], "label": st.get("label") or "your image"}
    return None


class UmapHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio
        self._bases: Lru[dict] = Lru(4)

    def _base(self, index, coords) -> dict:
        """The map without a star as plotly JSON, built once per (index, coordinates)."""
        key = (index.key, hashlib.blake2b(np.ascontiguousarray(coords).tobytes(), digest_size=16).hexdigest())
        return self._bases.get(key, lambda: json.loads(
            charts.umap_figure(coords, index.labels, index.indices, index.classes).to_json()))

    def _figure(self, path: str, coords, st, how: str, seconds: float) -> UmapOut:
        index = self.studio.maps.index(path)
        marker = _marker(st, path)
        fig = PlotData(type="plotly", plot=charts.with_marker(self._base(index, coords), marker))
        where = "the embedded CIFAR-10 sample's" if self.studio.data.using_sample() else "CIFAR-10"
        text = (f"**{esc(checkpoint_stem(path))}**: {len(coords):,} of {where} test images · {how}"
                + ("" if marker else " · explore an image to place it on the map"))
        info = {"points": int(len(coords)), "classes": index.classes, "cached": how != "computed",
                "seconds": round(seconds, 3), "marker": marker, "sample": self.studio.data.using_sample()}
        return UmapOut(text, fig, info, gr.update(visible=False))

    def _errors(self, fn) -> UmapOut:
        try:
            return fn()
        except (CheckpointError, DataError, RuntimeError, OSError, ValueError) as e:
            return UmapOut(explain("The map could not be made", e))

    def preview(self, checkpoint, st) -> UmapOut:
        """The map if it is ready without heavy work (cached, or stored in the sample); else a hint."""
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return UmapOut(msg(UNLISTED, "warn")) if checkpoint else NO_MAP

        def run() -> UmapOut:
            t0 = time.perf_counter()
            coords = self.studio.maps.cached_umap(path)
            if coords is None:
                return UmapOut(msg(f"The map of **{esc(checkpoint_stem(path))}** is not computed yet: press "
                                   "**Compute / show map** (about 20 s, once per checkpoint).", "info"),
                               no_checkpoint=gr.update(visible=False))
            return self._figure(path, coords, st, "ready", time.perf_counter() - t0)

        return self._errors(run)

    def show(self, checkpoint, st, progress=gr.Progress()) -> UmapOut:
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return UmapOut(msg(UNLISTED, "warn")) if checkpoint else NO_MAP

        def run() -> UmapOut:
            t0 = time.perf_counter()
            cached = self.studio.maps.cached_umap(path) is not None
            coords = self.studio.maps.umap(path, lambda f, d: progress(f, desc=d))
            secs = time.perf_counter() - t0
            return self._figure(path, coords, st, "loaded from cache" if cached else "computed", secs)

        return self._errors(run)


def build(h: UmapHandlers, explore: ExploreHandlers, ckpt: gr.Dropdown, tabs: gr.Tabs, preset: gr.Radio,
          explore_state: gr.State) -> UmapTab:
    gr.Markdown("UMAP of the backbone features of the test images, coloured by class (hover for class and index). "
                "The default model's map over the embedded sample is stored with the sample; other maps are computed "
                "once per checkpoint, then cached on disk (the fit runs in a separate process). The image you explore "
                "in the Explore tab appears as a ★, placed at the similarity-weighted mean of its 10 nearest test "
                "images' positions.")
    with gr.Column(visible=False) as no_ckpt_box:
        gr.Markdown(NO_CHECKPOINT)
        quick_btn = gr.Button("Set up the Quick CPU demo in the Train tab", variant="primary")
    run = gr.Button("Compute / show map", variant="primary", elem_id="umap-run")
    status = gr.Markdown(elem_id="umap-status")
    plot = gr.Plot(label="UMAP", elem_id="umap-plot")
    result = gr.JSON(visible=False)
    tab = UmapTab(ckpt, explore_state, run, status, plot, result, no_ckpt_box)
    run.click(h.show, tab.inputs, tab.outputs, api_name="umap", concurrency_id="heavy", concurrency_limit=1)
    ckpt.input(h.preview, tab.inputs, tab.outputs, api_name="umap_preview")
    quick_btn.click(explore.quick, None, [tabs, preset], api_visibility="private")
    return tab
