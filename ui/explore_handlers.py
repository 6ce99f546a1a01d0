"""Explore tab handlers: one image through the model (views with their parameters, embedding,
neighbours among the test images, kNN class guess, position on the map). Each visitor's image lives
in their own gr.State.

The page's handlers are generators: the views come at once, the embedding next, then the neighbours
and guess from the best feature bank there is, and the answer follows the background work until the
full test set's bank and map are there (services/explore.py decides which bank answers and what it
answers; this file shows it). `upload` and `test_image` run the same to the end and return the last
answer: the API's endpoints, one complete answer per call."""
from __future__ import annotations

import os
import secrets
import time
from collections import deque
from typing import Iterator

import gradio as gr
import numpy as np

from services import explore
from services.errors import EXPECTED, BadImage, DataError
from services.features.banks import BANK, MAP
from services.features.lru import Lru
from services.studio import Studio

from . import charts
from .common import DATA_HELP, UNLISTED, esc, explain, failure, msg
from .explore_reply import (
    Answer,
    ExploreOut,
    RedrawOut,
    Reply,
    background_line,
    bank_title,
    describe,
    hwc,
    neighbours_html,
)
from .pictures import Pictures, Thumbnails


def _last(replies: Iterator):
    return deque(replies, maxlen=1).pop()


class ExploreHandlers:
    def __init__(self, studio: Studio, per_class: int = 3, pictures: Pictures | None = None):
        self.studio, self.per_class = studio, per_class
        self.pictures = pictures or Pictures()  # image outputs as write-once files (see ui/pictures.py)
        self.thumbnails = Thumbnails()
        self._backgrounds: Lru[tuple] = Lru(4)  # bank -> (map picture, coords -> pixels)
        self._examples: Lru[list[int]] = Lru(4)  # data source -> test indices

    def select(self, checkpoint) -> None:
        """The checkpoint chosen on the page: its banks and map are built in the background."""
        path = self.studio.catalog.valid(checkpoint)
        if path:
            self.studio.maps.select(path)

    def follow(self, checkpoint) -> tuple:
        """A checkpoint chosen on the page: start its background work, and show the line on it."""
        self.select(checkpoint)
        return self.background(checkpoint)

    def background(self, checkpoint) -> tuple:
        """(the line on the background work for this checkpoint, the timer that refreshes it while it runs)."""
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return "", gr.Timer(active=False)
        maps = self.studio.maps
        stand_in = self.studio.data.sample_sizes()[1] if maps.stand_in(path) is not None else 0
        text, busy = background_line(stand_in, maps.stage(BANK, path), maps.stage(MAP, path))
        return text, gr.Timer(active=busy)

    def example_indices(self) -> list[int]:
        """The first `per_class` test images of every class."""
        return list(self._examples.get(self.studio.data.path(), lambda: explore.example_indices(
            self.studio.data.dataset().test.labels.numpy(), self.per_class)))

    def _show(self, found: explore.Found) -> Answer:
        """A bank's answer as the page shows it: thumbnails with captions, and the marker on its map."""
        bank, q = found.bank, found.query
        cells = [(self.thumbnails.get(bank.where.data, n.index, lambda i=n.index: hwc(bank.images[i].numpy())),
                  f"{n.cls} · {n.similarity:.3f} · #{n.index}") for n in q.neighbours]
        near = [{"index": n.index, "class": n.cls, "similarity": round(n.similarity, 4)} for n in q.neighbours]
        a = Answer(bank, near, q.guess, neighbours_html(cells, bank_title(bank)))
        if (xy := found.xy) is not None:
            bg, to_px = self._backgrounds.get(bank.index.key, lambda: charts.map_background(
                bank.coords, bank.index.labels, bank.index.classes))
            a.xy, a.map_picture = [float(xy[0]), float(xy[1])], self.pictures(charts.map_with_marker(bg, to_px, xy))
        return a

    def _follow(self, r: Reply, path: str, vec: np.ndarray) -> Iterator[ExploreOut]:
        """The best answer there is, then better ones as the background work makes them possible."""
        pixels, test_index, last = r.state["pixels"], r.state["test_index"], None
        for step in explore.follow(self.studio.maps, path, vec, test_index, pixels):
            if step.found is not None:
                r.set_answer(self._show(step.found), test_index)
            r.follow(step.bank, step.map)
            out = r.out()
            if (out.status, out.neighbours, out.map_image) != last:  # a new answer, or progress to tell
                last = (out.status, out.neighbours, out.map_image)
                yield out

    def analyse(self, pixels, source, notes, test_index, path) -> Iterator[ExploreOut]:
        t0, seed = time.perf_counter(), secrets.randbelow(2**31)
        views, params = self.studio.models.views(pixels, path, seed)
        st = {"pixels": pixels, "source": source, "test_index": test_index, "seed": seed, "xy": None,
              "label": source, "checkpoint": path}
        info = {"source": source, "notes": notes, "views": params, "seed": seed, "neighbours": [], "guess": None,
                "prediction": None, "map_xy": None, "checkpoint": path}
        head = "\n".join([f"**{esc(source)}**"] + [f"- {esc(n)}" for n in notes])
        big = [self.pictures(charts.upscale(a, 5)) for a in (hwc(pixels), views[0], views[1])]
        r = Reply(head, big, params, st, info, bool(path), started=t0)
        if not path:
            r.lines["note"] = msg("No trained checkpoint: showing the augmentations only.", "warn")
            yield r.out()
            return
        r.lines["embedding"] = "⏳ Embedding: computing…"
        yield r.out()  # the views, before anything that needs the model or the test images
        vec = self.studio.models.embed(path, pixels)
        info.update(embedding=[float(v) for v in vec], embedding_norm=float(np.linalg.norm(vec)),
                    embedding_dim=int(vec.size))
        r.embedding, r.lines["embedding"] = self.pictures(charts.embedding_strip(vec)), ""
        if test_index is not None:
            data = self.studio.data.dataset()
            true = data.classes[int(data.test.labels[test_index])]
            r.lines["note"] = f"Neighbours exclude the image itself (leave-one-out); its true class is **{true}**."
        yield from self._follow(r, path, vec)

    def _safely(self, replies) -> Iterator[ExploreOut]:
        try:
            yield from replies()
        except EXPECTED as e:
            if isinstance(e, BadImage):
                gr.Warning(str(e))  # a pop-up too: the visitor's own file is at fault
            yield ExploreOut.only(status=explain("This image could not be analysed", e, hint="Please try again.",
                                                 checkpoint="This checkpoint cannot be used",
                                                 data="The test images could not be loaded"))

    def _upload(self, file, checkpoint) -> Iterator[ExploreOut]:
        if not file:
            yield ExploreOut.only(status=msg("Choose an image file to upload.", "info"))
            return
        path = self.studio.catalog.valid(checkpoint)
        if checkpoint and not path:
            yield ExploreOut.only(status=msg(UNLISTED, "warn"))
            return
        d = self.studio.decode(file)
        fmt = f", {d.format}" if d.format else ""
        src = f"uploaded {os.path.basename(file)} ({d.size[0]}×{d.size[1]} {d.mode}{fmt})"
        yield from self.analyse(d.pixels, src, d.notes, None, path)

    def _test(self, i, checkpoint) -> Iterator[ExploreOut]:
        data = self.studio.data.dataset()
        if i is None or not 0 <= int(i) < len(data.test):
            yield ExploreOut.only(status=msg(f"Test image numbers run from 0 to {len(data.test) - 1}.", "warn"))
            return
        i, path = int(i), self.studio.catalog.valid(checkpoint)
        if checkpoint and not path:
            yield ExploreOut.only(status=msg(UNLISTED, "warn"))
            return
        src = f"test image #{i} ({data.classes[int(data.test.labels[i])]})"
        yield from self.analyse(data.test.images[i].numpy(), src, [], i, path)

    def upload_stream(self, image, checkpoint) -> Iterator[ExploreOut]:
        yield from self._safely(lambda: self._upload(image, checkpoint))

    def test_stream(self, index, checkpoint) -> Iterator[ExploreOut]:
        yield from self._safely(lambda: self._test(index, checkpoint))

    def upload(self, image, checkpoint) -> ExploreOut:
        return _last(self.upload_stream(image, checkpoint))

    def test_image(self, index, checkpoint) -> ExploreOut:
        return _last(self.test_stream(index, checkpoint))

    def pick(self, checkpoint, evt: gr.SelectData) -> Iterator[tuple]:
        i = self.example_indices()[evt.index]
        for out in self.test_stream(i, checkpoint):
            yield (i, *out)

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
