"""UMAP tab handlers: the test images' features in 2-D. The best map there is shows at once: the
checkpoint's map of the data in use when it is fitted, else the embedded sample's (stored with the
sample for the default model) while the full one is built in the background (services/features/maps.py)."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from gradio.components.plot import PlotData

from services.catalog import checkpoint_stem
from services.errors import EXPECTED
from services.features.banks import BANK, MAP
from services.features.lru import Lru
from services.features.neighbours import FeatureIndex
from services.studio import Studio

from . import charts
from .common import UNLISTED, esc, explain, msg
from .explore_reply import progress_text


class UmapOut(NamedTuple):
    status: Any
    plot: Any = None
    result: Any = None
    no_checkpoint: Any = gr.skip()  # a layout block: None is not a valid value for it


NO_MAP = UmapOut(msg("No trained checkpoint yet, so there is no meaningful map to show.", "warn"),
                 no_checkpoint=gr.update(visible=True))
SKIP = UmapOut(gr.skip(), gr.skip(), gr.skip(), gr.skip())
PROGRESS = gr.Progress()  # gradio gives each call its own tracker in place of this default


def _marker(st, path: str, index: FeatureIndex) -> dict | None:
    """The explored image's star, unless it was placed on another map (the sample's, standing in)."""
    if st and st.get("xy") and st.get("checkpoint") == path and st.get("map", index.key) == index.key:
        return {"x": st["xy"][0], "y": st["xy"][1], "label": st.get("label") or "your image"}
    return None


class UmapHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio
        self._bases: Lru[dict] = Lru(4)

    def _base(self, index: FeatureIndex, coords: np.ndarray) -> dict:
        """The map without a star as plotly JSON, built once per (index, coordinates)."""
        key = (index.key, hashlib.blake2b(np.ascontiguousarray(coords).tobytes(), digest_size=16).hexdigest())
        return self._bases.get(key, lambda: json.loads(
            charts.umap_figure(coords, index.labels, index.indices, index.classes).to_json()))

    def _building(self, path: str) -> str:
        """Where the checkpoint's own map stands."""
        maps = self.studio.maps
        bank, mapping = maps.stage(BANK, path), maps.stage(MAP, path)
        st = bank if bank is not None and not bank.done else mapping
        if st is not None and st.state == "failed":
            return "could not be made (the details are in the server log)"
        return f"is being built in the background ({progress_text(st)})"

    def _figure(self, path: str, index: FeatureIndex, coords, st, how: str, seconds: float,
                stand_in: bool = False) -> UmapOut:
        marker = _marker(st, path, index)
        fig = PlotData(type="plotly", plot=charts.with_marker(self._base(index, coords), marker))
        sample = stand_in or self.studio.data.using_sample()
        where = "the embedded CIFAR-10 sample's" if sample else "CIFAR-10"
        text = (f"**{esc(checkpoint_stem(path))}**: {len(coords):,} of {where} test images · {how}"
                + ("" if marker else " · explore an image to place it on the map"))
        info = {"points": int(len(coords)), "classes": index.classes, "cached": how != "computed",
                "seconds": round(seconds, 3), "marker": marker, "sample": sample, "stand_in": stand_in}
        return UmapOut(text, fig, info, gr.update(visible=False))

    def _errors(self, fn) -> UmapOut:
        try:
            return fn()
        except EXPECTED as e:
            return UmapOut(explain("The map could not be made", e))

    def preview(self, checkpoint, st) -> UmapOut:
        """The best map there is, at once; the checkpoint's own is built in the background meanwhile."""
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return UmapOut(msg(UNLISTED, "warn")) if checkpoint else NO_MAP

        def run() -> UmapOut:
            t0 = time.perf_counter()
            self.studio.maps.select(path)
            bank = self.studio.maps.best_map(path)
            if bank is None:
                return UmapOut(msg(f"**{esc(checkpoint_stem(path))}**: the map of the test images "
                                   f"{self._building(path)}; it shows here when ready.", "info"),
                               no_checkpoint=gr.update(visible=False))
            how = self._standing_in(path) if bank.stand_in else "ready"
            return self._figure(path, bank.index, bank.coords, st, how, time.perf_counter() - t0, bank.stand_in)

        return self._errors(run)

    def tick(self, checkpoint, st, shown) -> tuple:
        """While the map shown is not the checkpoint's own: its progress, then the map itself. (outputs, timer)"""
        path = self.studio.catalog.valid(checkpoint)
        if not path or (shown and shown.get("points") and not shown.get("stand_in")):
            return *SKIP, gr.Timer(active=False)
        full = self.studio.maps.full(path)
        if full is not None and full.coords is not None:
            return *self.preview(checkpoint, st), gr.Timer(active=False)
        out = self.preview(checkpoint, st) if not shown else UmapOut(self._building_status(path, shown), *SKIP[1:])
        return *out, gr.Timer(active=True)

    def _standing_in(self, path: str) -> str:
        return f"standing in until the map of the full test set, which {self._building(path)}"

    def _building_status(self, path: str, shown: dict) -> str:
        return (f"**{esc(checkpoint_stem(path))}**: {shown['points']:,} of the embedded CIFAR-10 sample's test "
                f"images · {self._standing_in(path)}")

    def show(self, checkpoint, st, progress=PROGRESS) -> UmapOut:
        """The checkpoint's own map, waiting for it to be built if need be."""
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return UmapOut(msg(UNLISTED, "warn")) if checkpoint else NO_MAP

        def run() -> UmapOut:
            t0 = time.perf_counter()
            self.studio.models.get(path)  # a checkpoint that cannot be used says so here, not in a child's log
            cached = self.studio.maps.cached_umap(path) is not None
            coords = self.studio.maps.umap(path, lambda f, d: progress(f, desc=d))
            index = self.studio.maps.index(path)
            secs = time.perf_counter() - t0
            return self._figure(path, index, coords, st, "loaded from cache" if cached else "computed", secs)

        return self._errors(run)
