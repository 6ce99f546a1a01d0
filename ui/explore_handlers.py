"""Explore tab handlers: one image through the model (views with their parameters, embedding,
neighbours among the test images, kNN class guess, position on the map). Each visitor's image lives
in their own gr.State."""
from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from services.images import BadImage
from services.neighbours import project
from services.studio import Studio
from vicreg.checkpoint import CheckpointError
from vicreg.data import DataError

from . import charts
from .common import DATA_HELP, QUICK, UNLISTED, esc, failure, msg
from .pictures import Pictures, Thumbnails

N_NEIGHBOURS = 8
VOTE_K = 20
MAP_K = 10


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


def neighbours_html(cells: list[tuple[str, str]]) -> str:
    """The nearest test images as one HTML block of inline thumbnails with their captions."""
    figs = "".join(f"<figure><img src='{uri}' alt='{esc(cap)}'><figcaption>{esc(cap)}</figcaption></figure>"
                   for uri, cap in cells)
    return ("<div class='vr-nbrs-title'>Nearest test images (class · cosine similarity · test #)</div>"
            f"<div class='vr-nbrs'>{figs}</div>")


class ExploreHandlers:
    def __init__(self, studio: Studio, per_class: int = 3, pictures: Pictures | None = None):
        self.studio, self.per_class = studio, per_class
        self.pictures = pictures or Pictures()  # image outputs as write-once files (see ui/pictures.py)
        self.thumbnails = Thumbnails()
        self._lock = threading.Lock()
        self._backgrounds: dict[str, tuple] = {}  # index key -> (map picture, coords -> pixels)
        self._examples: dict[str, list[int]] = {}  # data source -> test indices

    def example_indices(self) -> list[int]:
        """The first `per_class` test images of every class."""
        key = self.studio.data.path()
        with self._lock:
            if key not in self._examples:
                labels = self.studio.data.dataset().test.labels.numpy()
                self._examples[key] = [int(i) for c in range(int(labels.max()) + 1)
                                       for i in np.nonzero(labels == c)[0][: self.per_class]]
            return list(self._examples[key])

    def _background(self, index, coords):
        with self._lock:
            if index.key not in self._backgrounds:
                self._backgrounds[index.key] = charts.map_background(coords, index.labels, index.classes)
            return self._backgrounds[index.key]

    def _neighbours(self, path, vec, test_index, lines, info, st, progress):
        index = self.studio.maps.index(path, lambda f, d: progress(f, desc=d))
        q = index.query(vec, N_NEIGHBOURS, VOTE_K, exclude_test_index=test_index)
        test, source = self.studio.data.dataset().test, self.studio.data.path()
        gallery = neighbours_html([(self.thumbnails.get(source, n.index, lambda i=n.index: hwc(test.images[i].numpy())),
                                    f"{n.cls} · {n.similarity:.3f} · #{n.index}") for n in q.neighbours])
        pred = max(q.guess, key=q.guess.get)
        info.update(neighbours=[{"index": n.index, "class": n.cls, "similarity": round(n.similarity, 4)}
                                for n in q.neighbours], guess=q.guess, prediction=pred)
        coords, map_pic = self.studio.maps.cached_umap(path), None
        if coords is not None:
            xy = project(q.sims[:MAP_K], coords[q.rows[:MAP_K]])
            st["xy"] = info["map_xy"] = [float(xy[0]), float(xy[1])]
            st["label"] = f"your image ({pred}?)" if test_index is None else f"test #{test_index}"
            bg, to_px = self._background(index, coords)
            map_pic = self.pictures(charts.map_with_marker(bg, to_px, xy))
            lines.append(f"Map position ({xy[0]:.2f}, {xy[1]:.2f}): similarity-weighted mean of the {MAP_K} "
                         "nearest test images' positions.")
        else:
            lines.append(msg("The UMAP for this checkpoint is not computed yet: press **Compute / show map** in the "
                             "UMAP tab (about 20 s, once per checkpoint), then come back.", "info"))
        if test_index is not None:
            true = index.classes[int(test.labels[test_index])]
            lines.append(f"Neighbours exclude the image itself (leave-one-out); its true class is **{true}**.")
        return q.guess, map_pic, gallery

    def analyse(self, pixels, source, notes, test_index, path, progress) -> ExploreOut:
        t0 = time.perf_counter()
        seed = secrets.randbelow(2**31)
        views, params = self.studio.models.views(pixels, path, seed)
        st = {"pixels": pixels, "source": source, "test_index": test_index, "seed": seed, "xy": None,
              "label": source, "checkpoint": path}
        info = {"source": source, "notes": notes, "views": params, "seed": seed, "neighbours": [], "guess": None,
                "prediction": None, "map_xy": None, "checkpoint": path}
        head, lines = "\n".join([f"**{esc(source)}**"] + [f"- {esc(n)}" for n in notes]), []
        big = [self.pictures(charts.upscale(a, 5)) for a in (hwc(pixels), views[0], views[1])]
        emb = guess = map_pic = gallery = None
        if path:
            vec = self.studio.models.embed(path, pixels)
            info.update(embedding=[float(v) for v in vec], embedding_norm=float(np.linalg.norm(vec)),
                        embedding_dim=int(vec.size))
            guess, map_pic, gallery = self._neighbours(path, vec, test_index, lines, info, st, progress)
            emb = self.pictures(charts.embedding_strip(vec))
        else:
            lines.append(msg("No trained checkpoint: showing the augmentations only.", "warn"))
        info["seconds"] = round(time.perf_counter() - t0, 4)
        return ExploreOut("\n\n".join([head, *lines]), big[0], big[1], params[0], big[2], params[1], emb, guess,
                          map_pic, gallery, info, describe(params[0]), describe(params[1]), st,
                          gr.update(visible=not path))

    def _safe(self, fn) -> ExploreOut:
        try:
            return fn()
        except BadImage as e:
            gr.Warning(str(e))
            return ExploreOut.only(status=msg(f"This image cannot be used: {esc(e)}", "error"))
        except CheckpointError as e:
            return ExploreOut.only(status=failure("This checkpoint cannot be used", e, "Pick another one."))
        except DataError as e:
            return ExploreOut.only(status=failure("The test images could not be loaded", e, DATA_HELP))
        except (RuntimeError, OSError, ValueError) as e:
            return ExploreOut.only(status=failure("This image could not be analysed", e, "Please try again."))

    def _upload(self, file, checkpoint, progress) -> ExploreOut:
        if not file:
            return ExploreOut.only(status=msg("Choose an image file to upload.", "info"))
        path = self.studio.catalog.valid(checkpoint)
        if checkpoint and not path:
            return ExploreOut.only(status=msg(UNLISTED, "warn"))
        d = self.studio.decode(file)
        fmt = f", {d.format}" if d.format else ""
        src = f"uploaded {os.path.basename(file)} ({d.size[0]}×{d.size[1]} {d.mode}{fmt})"
        return self.analyse(d.pixels, src, d.notes, None, path, progress)

    def _test(self, i, checkpoint, progress) -> ExploreOut:
        data = self.studio.data.dataset()
        if i is None or not 0 <= int(i) < len(data.test):
            return ExploreOut.only(status=msg(f"Test image numbers run from 0 to {len(data.test) - 1}.", "warn"))
        i, path = int(i), self.studio.catalog.valid(checkpoint)
        if checkpoint and not path:
            return ExploreOut.only(status=msg(UNLISTED, "warn"))
        src = f"test image #{i} ({data.classes[int(data.test.labels[i])]})"
        return self.analyse(data.test.images[i].numpy(), src, [], i, path, progress)

    def upload(self, image, checkpoint, progress=gr.Progress()) -> ExploreOut:
        return self._safe(lambda: self._upload(image, checkpoint, progress))

    def test_image(self, index, checkpoint, progress=gr.Progress()) -> ExploreOut:
        return self._safe(lambda: self._test(index, checkpoint, progress))

    def pick(self, checkpoint, evt: gr.SelectData, progress=gr.Progress()) -> tuple:
        i = self.example_indices()[evt.index]
        return (i, *self._safe(lambda: self._test(i, checkpoint, progress)))

    def redraw(self, st, checkpoint) -> RedrawOut:
        if not st:
            return RedrawOut(msg("Upload or pick an image first.", "info"), *[gr.skip()] * 7)
        seed = secrets.randbelow(2**31)
        views, params = self.studio.models.views(st["pixels"], self.studio.catalog.valid(checkpoint), seed)
        return RedrawOut(gr.skip(), self.pictures(charts.upscale(views[0], 5)), params[0],
                         self.pictures(charts.upscale(views[1], 5)), params[1],
                         describe(params[0]), describe(params[1]), {**st, "seed": seed})

    def examples(self) -> tuple:
        """(gallery items, status) for the example gallery: a few test images of every class."""
        try:
            data = self.studio.data.dataset()
            idx = self.example_indices()
        except DataError as e:
            return [], failure("The example images could not be loaded", e, DATA_HELP)
        return [(self.pictures(charts.upscale(hwc(data.test.images[i].numpy()), 2)),
                 f"#{i} {data.classes[int(data.test.labels[i])]}") for i in idx], gr.skip()

    @staticmethod
    def quick() -> tuple:
        """Open the Train tab on the Quick CPU demo preset."""
        return gr.Tabs(selected="train"), QUICK
