"""Explore tab: one image through the model: views with their parameters, embedding, neighbours,
kNN class guess and position on the UMAP. Each visitor's image lives in their own gr.State."""
from __future__ import annotations

import os
import secrets
import threading
import time

import gradio as gr
import numpy as np

from vicreg.checkpoint import CheckpointError
from vicreg.data import DataError
from vicreg.explore import BadImage, decode_image, project

from . import charts
from .common import NO_CHECKPOINT, esc, msg, valid_checkpoint

N_NEIGHBOURS = 8
_lock = threading.Lock()
_backgrounds: dict[str, tuple] = {}  # index key -> (map picture, coords -> pixels)
_examples: list[int] = []


def example_indices(studio, per_class: int = 3) -> list[int]:
    with _lock:
        if not _examples:
            labels = studio.dataset().test.labels.numpy()
            for c in range(int(labels.max()) + 1):
                _examples.extend(int(i) for i in np.nonzero(labels == c)[0][:per_class])
        return list(_examples)


def _background(index, coords):
    with _lock:
        if index.key not in _backgrounds:
            _backgrounds[index.key] = charts.map_background(coords, index.labels, index.classes)
        return _backgrounds[index.key]


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


def _hwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def build(studio, ckpt: gr.Dropdown, tabs: gr.Tabs, preset: gr.Radio):
    gr.Markdown("Send one image through the model. Uploads are decoded to 32×32 RGB exactly as the model sees them "
                "(short side resized, centre-cropped). Neighbours and the map use the CIFAR-10 test set.")
    with gr.Row():
        upload = gr.File(label="Upload an image", file_types=["image"], type="filepath", scale=1, elem_id="explore-upload")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="…or pick a CIFAR-10 test image", columns=10, height=200, allow_preview=False,
                                 elem_id="explore-examples")
            with gr.Row():
                test_idx = gr.Number(label="CIFAR-10 test image #", precision=0, minimum=0, value=0)
                show_btn = gr.Button("Show test image")
    with gr.Column(visible=False) as no_ckpt_box:
        gr.Markdown(NO_CHECKPOINT)
        quick_btn = gr.Button("Set up the Quick CPU demo in the Train tab", variant="primary")
    status = gr.Markdown(elem_id="explore-status")
    with gr.Row():
        original = gr.Image(label="Model input (32×32)", elem_id="explore-original", height=180)
        with gr.Column():
            view1 = gr.Image(label="View 1", elem_id="explore-view1", height=180)
            desc1 = gr.Markdown(elem_id="explore-params1")
        with gr.Column():
            view2 = gr.Image(label="View 2", elem_id="explore-view2", height=180)
            desc2 = gr.Markdown(elem_id="explore-params2")
    params1, params2 = gr.JSON(visible=False), gr.JSON(visible=False)
    views_btn = gr.Button("Draw new views (same image, new random parameters)")
    with gr.Row():
        emb = gr.Image(label="512-d backbone embedding (16×32 cells, white 0 → red max)", elem_id="explore-embedding")
        guess = gr.Label(label="kNN class guess (20 neighbours)", num_top_classes=3, elem_id="explore-guess")
        mapimg = gr.Image(label="Position on the UMAP (✚)", elem_id="explore-map", height=380, format="png")
    neighbours = gr.Gallery(label="Nearest CIFAR-10 test images (class · cosine similarity · test #)", columns=N_NEIGHBOURS,
                            height=220, allow_preview=False, elem_id="explore-neighbours")
    result = gr.JSON(visible=False)
    state = gr.State(None)
    outs = [status, original, view1, params1, view2, params2, emb, guess, mapimg, neighbours, result, desc1, desc2, state, no_ckpt_box]

    def analyse(pixels, source, notes, test_index, path, progress):
        t0 = time.perf_counter()
        seed = secrets.randbelow(2**31)
        views, params = studio.views(pixels, path, seed)
        st = {"pixels": pixels, "source": source, "test_index": test_index, "seed": seed, "xy": None, "label": source, "checkpoint": path}
        info = {"source": source, "notes": notes, "views": params, "seed": seed, "neighbours": [], "guess": None,
                "prediction": None, "map_xy": None, "checkpoint": path}
        base = [charts.upscale(_hwc(pixels), 5), charts.upscale(views[0], 5), params[0], charts.upscale(views[1], 5), params[1]]
        lines = [f"**{esc(source)}**"] + [f"- {esc(n)}" for n in notes]
        if not path:
            lines.append(msg("No trained checkpoint: showing the augmentations only.", "warn"))
            return ["\n".join(lines), *base, None, None, None, None, info, *map(describe, params), st, gr.update(visible=True)]
        index = studio.index(path, lambda f, d: progress(f, desc=d))
        vec = studio.embed(path, pixels)
        nbrs, guess, rows, sims = index.query(vec, N_NEIGHBOURS, 20, exclude_test_index=test_index)
        test = studio.dataset().test.images
        gallery_items = [(charts.upscale(_hwc(test[n.index].numpy()), 3), f"{n.cls} · {n.similarity:.3f} · #{n.index}") for n in nbrs]
        pred = max(guess, key=guess.get)
        info.update(neighbours=[{"index": n.index, "class": n.cls, "similarity": round(n.similarity, 4)} for n in nbrs],
                    guess=guess, prediction=pred, embedding_norm=float(np.linalg.norm(vec)), embedding_dim=int(vec.size))
        coords, map_pic = studio.cached_umap(path), None
        if coords is not None:
            xy = project(sims[:10], coords[rows[:10]])
            st["xy"], info["map_xy"] = [float(xy[0]), float(xy[1])], [float(xy[0]), float(xy[1])]
            st["label"] = f"your image ({pred}?)" if test_index is None else f"test #{test_index}"
            bg, to_px = _background(index, coords)
            map_pic = charts.map_with_marker(bg, to_px, xy)
            lines.append(f"Map position ({xy[0]:.2f}, {xy[1]:.2f}): similarity-weighted mean of the 10 nearest test images' positions.")
        else:
            lines.append(msg("The UMAP for this checkpoint is not computed yet: press **Compute / show map** in the UMAP tab "
                             "(about 20 s, once per checkpoint), then come back.", "info"))
        if test_index is not None:
            lines.append(f"Neighbours exclude the image itself (leave-one-out); its true class is **{index.classes[int(studio.dataset().test.labels[test_index])]}**.")
        info["seconds"] = round(time.perf_counter() - t0, 4)
        return ["\n".join(lines), *base, charts.embedding_strip(vec), guess, map_pic, gallery_items, info, *map(describe, params),
                st, gr.update(visible=False)]

    def safe(fn):
        try:
            return fn()
        except BadImage as e:
            gr.Warning(str(e))
            return [msg(f"This image cannot be used: {esc(e)}", "error")] + [gr.skip()] * (len(outs) - 1)
        except (CheckpointError, DataError, RuntimeError, OSError) as e:
            return [msg(f"Failed: {esc(e)}", "error")] + [gr.skip()] * (len(outs) - 1)

    def _upload(file, path, progress):
        if not file:
            return [msg("Choose an image file to upload.", "info")] + [gr.skip()] * (len(outs) - 1)
        d = decode_image(file)
        src = f"uploaded {os.path.basename(file)} ({d.size[0]}×{d.size[1]} {d.mode}{', ' + d.format if d.format else ''})"
        return analyse(d.pixels, src, d.notes, None, valid_checkpoint(path), progress)

    def _test(i, path, progress):
        data = studio.dataset()
        if i is None or not 0 <= int(i) < len(data.test):
            return [msg(f"Test image numbers run from 0 to {len(data.test) - 1}.", "warn")] + [gr.skip()] * (len(outs) - 1)
        i = int(i)
        return analyse(data.test.images[i].numpy(), f"CIFAR-10 test #{i} ({data.classes[int(data.test.labels[i])]})", [], i,
                       valid_checkpoint(path), progress)

    def from_upload(image, checkpoint, progress=gr.Progress()):
        return safe(lambda: _upload(image, checkpoint, progress))

    def from_test(index, checkpoint, progress=gr.Progress()):
        return safe(lambda: _test(index, checkpoint, progress))

    def redraw(st, checkpoint):
        if not st:
            return msg("Upload or pick an image first.", "info"), *[gr.skip()] * 7
        seed = secrets.randbelow(2**31)
        views, params = studio.views(st["pixels"], valid_checkpoint(checkpoint), seed)
        return (gr.skip(), charts.upscale(views[0], 5), params[0], charts.upscale(views[1], 5), params[1], *map(describe, params),
                {**st, "seed": seed})

    def examples():
        try:
            data = studio.dataset()
        except DataError as e:
            return [], msg(f"CIFAR-10 is not available: {esc(e)}", "error")
        idx = example_indices(studio)
        return [(charts.upscale(_hwc(data.test.images[i].numpy()), 2), f"#{i} {data.classes[int(data.test.labels[i])]}") for i in idx], gr.skip()

    def pick(path, evt: gr.SelectData, progress=gr.Progress()):
        i = example_indices(studio)[evt.index]
        return [i] + safe(lambda: _test(i, path, progress))

    upload.upload(from_upload, [upload, ckpt], outs, api_name="explore_upload", concurrency_limit=4)
    show_btn.click(from_test, [test_idx, ckpt], outs, api_name="explore_test_image", concurrency_limit=4)
    test_idx.submit(from_test, [test_idx, ckpt], outs, api_visibility="private", concurrency_limit=4)
    gallery.select(pick, [ckpt], [test_idx] + outs, api_visibility="private", concurrency_limit=4)
    views_btn.click(redraw, [state, ckpt], [status, view1, params1, view2, params2, desc1, desc2, state], api_name="explore_views")
    quick_btn.click(lambda: (gr.Tabs(selected="train"), "Quick CPU demo"), None, [tabs, preset], api_visibility="private")
    return state, (examples, [gallery, status])

