"""What the Explore tab shows for one image, as it grows: the views at once, then the embedding, the
neighbours and guess (from the embedded sample's bank while the full one is built), then the place on
the map. `Reply` holds what is known so far; `Reply.out()` is the page's outputs now, complete each
time, so that an API caller's last answer holds everything."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from services.explore import MAP_K
from services.features.banks import FAILED, RUNNING, WAITING, Stage
from services.features.maps import Bank

from .common import esc, msg


class ExploreOut(NamedTuple):
    status: Any
    original: Any
    view1: Any
    params1: Any
    view2: Any
    params2: Any
    embedding: Any
    guess: Any
    map_image: Any
    neighbours: Any
    info: Any
    desc1: Any
    desc2: Any
    state: Any
    no_checkpoint: Any

    @classmethod
    def only(cls, **values) -> "ExploreOut":
        """Some outputs set, the others left as they are."""
        return cls(**{f: values.get(f, gr.skip()) for f in cls._fields})


class RedrawOut(NamedTuple):
    status: Any
    view1: Any
    params1: Any
    view2: Any
    params2: Any
    desc1: Any
    desc2: Any
    state: Any


def describe(p: dict) -> str:
    """AugParams.describe() as a few readable lines."""
    x, y, w, h = p["crop_xywh"]
    lines = [f"- crop at ({x:.2f}, {y:.2f}), {w:.2f}×{h:.2f} of the image ({100 * p['crop_area']:.0f}% area)",
             f"- horizontal flip: {'yes' if p['flip'] else 'no'}"]
    if p["jitter_order"]:
        ops = ", ".join(f"{op} {p[op]:+.3f}" if op == "hue" else f"{op} ×{p[op]:.2f}" for op in p["jitter_order"])
        lines.append(f"- colour jitter, in order: {ops}")
    else:
        lines.append("- colour jitter: no")
    lines.append(f"- grayscale: {'yes' if p['grayscale'] else 'no'} · solarize: {'yes' if p['solarize'] else 'no'}")
    return "\n".join(lines)


def hwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def neighbours_html(cells: list[tuple[str, str]], title: str) -> str:
    """The nearest test images as one HTML block of inline thumbnails with their captions."""
    figs = "".join(f"<figure><img src='{uri}' alt='{esc(cap)}'><figcaption>{esc(cap)}</figcaption></figure>"
                   for uri, cap in cells)
    return f"<div class='vr-nbrs-title'>{esc(title)}</div><div class='vr-nbrs'>{figs}</div>"


def waiting_html(text: str) -> str:
    return f"<div class='vr-nbrs-title'>⏳ {esc(text)}</div>"


def progress_text(st: Stage | None) -> str:
    if st is None or st.state == WAITING:
        return "waiting for other work to finish"
    return f"{st.text}, {100 * st.fraction:.0f}%" if st.state == RUNNING and st.fraction > 0 else st.text


def bank_title(bank: Bank) -> str:
    if bank.stand_in:
        return (f"Nearest of the embedded sample's {len(bank.index.labels):,} test images for now (class · cosine "
                "similarity · sample #); "
                "the full test set's follow when its feature bank is ready")
    return "Nearest test images (class · cosine similarity · test #)"


def neighbours_line(shown: Bank | None, bank: Stage | None) -> str:
    """Where the neighbours and guess come from, while that is not the final answer."""
    if bank is not None and bank.state == FAILED:
        return msg("The feature bank of the test images could not be built, so there are no neighbours from them. "
                   "The details are in the server log.", "error")
    if shown is None:
        return f"⏳ Neighbours and guess: waiting for the feature bank of the test images ({progress_text(bank)})."
    if shown.stand_in:
        return msg(f"Neighbours and guess: from the embedded sample's {len(shown.index.labels):,} test images "
                   f"until the full test set's feature bank is ready ({progress_text(bank)}); they will update by "
                   "themselves.", "info")
    return ""


def map_line(shown: Bank | None, mapping: Stage | None) -> str:
    """What the place on the map waits for, when it is not there."""
    if mapping is not None and mapping.state == FAILED:
        return msg("The map of the test images could not be fitted. The details are in the server log.", "error")
    if shown is None or shown.stand_in:
        return "⏳ Map position: after the feature bank of the test images, once its map is fitted."
    if mapping is None or mapping.done:
        return msg("The UMAP for this checkpoint is not computed yet: press **Compute / show map** in the UMAP tab "
                   "(about 20 s, once per checkpoint), then come back.", "info")
    return f"⏳ Map position: fitting the map of the test images ({progress_text(mapping)})."


def background_line(stand_in: int, bank: Stage | None, mapping: Stage | None) -> tuple[str, bool]:
    """(a line on the feature bank and map being built for the checkpoint, whether that work goes on);
    `stand_in`: how many of the embedded sample's test images answer meanwhile (0: none do)."""
    if bank is not None and bank.state == FAILED or mapping is not None and mapping.state == FAILED:
        what = "feature bank" if bank is not None and bank.state == FAILED else "map"
        return msg(f"The {what} of the test images could not be built. The details are in the server log.",
                   "error"), False
    if bank is not None and not bank.done:
        meanwhile = (f"Until it is ready, neighbours and guesses come from the embedded sample's {stand_in:,} test "
                     "images."
                     if stand_in else "Explore's neighbours wait for it.")
        return f"⏳ Building the feature bank of the test images in the background ({progress_text(bank)}). " + \
            meanwhile, True
    if mapping is not None and not mapping.done:
        return f"⏳ Fitting the map of the test images in the background ({progress_text(mapping)}).", True
    return "", False  # nothing left to wait for: nothing to say


@dataclass
class Answer:
    """One bank's answer for an embedding: neighbours, guess, and the place on its map if it has one."""

    bank: Bank
    neighbours: list[dict]
    guess: dict[str, float]
    gallery: str
    xy: list[float] | None = None
    map_picture: str | None = None

    @property
    def prediction(self) -> str:
        return max(self.guess, key=self.guess.get)


@dataclass
class Reply:
    head: str  # the image's source and notes
    pictures: list  # model input, view 1, view 2
    params: list[dict]
    state: dict
    info: dict
    has_checkpoint: bool
    embedding: Any = None
    answer: Answer | None = None
    lines: dict[str, str] = field(default_factory=lambda: dict.fromkeys(("embedding", "neighbours", "map", "note"), ""))
    started: float = field(default_factory=time.perf_counter)

    def set_answer(self, a: Answer, test_index: int | None) -> None:
        self.answer = a
        self.info.update(neighbours=a.neighbours, guess=a.guess, prediction=a.prediction, map_xy=a.xy)
        self.state.update(xy=a.xy, map=a.bank.index.key if a.xy is not None else None,
                          label=f"your image ({a.prediction}?)" if test_index is None else f"test #{test_index}")

    def follow(self, bank: Stage | None, mapping: Stage | None) -> None:
        """The status lines of what is still coming."""
        a = self.answer
        shown = a.bank if a else None
        self.lines["neighbours"] = neighbours_line(shown, bank)
        if a is not None and a.xy is not None:
            where = " on the embedded sample's map" if a.bank.stand_in else ""
            self.lines["map"] = (f"Map position ({a.xy[0]:.2f}, {a.xy[1]:.2f}){where}: similarity-weighted mean of the "
                                 f"{MAP_K} nearest test images' positions.")
        else:
            self.lines["map"] = map_line(shown, mapping)

    def out(self) -> ExploreOut:
        a = self.answer
        self.info["seconds"] = round(time.perf_counter() - self.started, 4)
        status = "\n\n".join([self.head] + [line for line in self.lines.values() if line])
        waits = "the embedding" if self.embedding is None else "the feature bank of the test images"
        gallery = a.gallery if a else waiting_html(f"Nearest test images: waiting for {waits}") \
            if self.has_checkpoint else None
        return ExploreOut(status, *self.pictures[:2], self.params[0], self.pictures[2], self.params[1], self.embedding,
                          a.guess if a else None, a.map_picture if a else None, gallery, dict(self.info),
                          describe(self.params[0]), describe(self.params[1]), dict(self.state),
                          gr.update(visible=not self.has_checkpoint))
