"""Plotly figures and small PIL pictures for the app (no gradio, no torch)."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from plotly.subplots import make_subplots
from plotly.utils import PlotlyJSONEncoder

# tab10, one colour per CIFAR-10 class, shared by the interactive map and the static one
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
CONFUSION_HOVER = "true %{y}<br>predicted %{x}<br>%{customdata:.0f} images (%{z:.1%})<extra></extra>"
MAX_POINTS = 1500  # per live-chart trace; older steps are thinned
REFERENCE = "#c4c4c4"  # the reference run's curves, behind the live ones


def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=40, r=10, t=40 if title else 28, b=30), title=title,
                      showlegend=False, template="plotly_white", uirevision="keep")
    return fig


def _thin(xs: list, *ys: list):
    if len(xs) <= MAX_POINTS:
        return (xs, *ys)
    keep = np.unique(np.linspace(0, len(xs) - 1, MAX_POINTS).round().astype(int))
    return tuple([s[i] for i in keep] for s in (xs, *ys))


def empty(title: str, note: str = "no run yet", height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, font=dict(size=14, color="#888"), x=0.5, y=0.5, xref="paper",
                       yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, height, title)


def _series(steps, *fields: str) -> tuple:
    return _thin([s.step for s in steps], *([getattr(s, f) for s in steps] for f in fields))


def _reference_note(fig: go.Figure, reference) -> None:
    """The grey curves' legend: which run they are."""
    if reference is not None:
        fig.add_annotation(text=f"grey: {reference.label}", showarrow=False, xref="paper", yref="paper", x=1, y=1.13,
                           xanchor="right", font=dict(size=11, color=REFERENCE))


def loss_figure(steps, reference=None) -> go.Figure:
    """The total loss and its three terms; `reference` (services/reference.py) drawn in grey behind them."""
    if not steps:
        return empty("Loss")
    fields = ("loss", "invariance", "variance", "covariance")
    titles = ("total loss", "invariance (MSE, unweighted)", "variance (hinge on std, unweighted)",
              "covariance (off-diagonal, unweighted)")
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.16, horizontal_spacing=0.08)
    cells = [(1, 1), (1, 2), (2, 1), (2, 2)]
    if reference is not None and reference.steps:
        x, *ys = _series(reference.steps, *fields)
        for (r, c), y in zip(cells, ys, strict=True):
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=REFERENCE, width=1.4),
                                     name="reference"), r, c)
    x, *ys = _series(steps, *fields)
    colours = ("#222", "#1f77b4", "#2ca02c", "#d62728")
    for (r, c), y, col in zip(cells, ys, colours, strict=True):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=col, width=1.6), name="loss"), r, c)
    fig.update_xaxes(title_text="step", row=2)
    _reference_note(fig, reference)
    return _layout(fig, 430)


def lr_figure(steps) -> go.Figure:
    if not steps:
        return empty("Learning rate")
    x, lr = _thin([s.step for s in steps], [s.lr for s in steps])
    fig = go.Figure(go.Scatter(x=x, y=lr, mode="lines", line=dict(color="#9467bd")))
    fig.update_xaxes(title_text="step")
    return _layout(fig, 260, "Learning rate")


def health_figure(steps, batch_size: int | None = None, reference=None) -> go.Figure:
    """Per-dimension std and effective rank of the embeddings: both fall when the model collapses."""
    if not steps:
        return empty("Embedding std / effective rank")
    rank_title = f"effective rank (max {batch_size})" if batch_size else "effective rank"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean per-dimension std (target 1)", rank_title))
    if reference is not None and reference.steps:
        x, std, rank = _series(reference.steps, "emb_std", "eff_rank")
        for col, y in ((1, std), (2, rank)):
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=REFERENCE), name="reference"), 1, col)
    x, std, rank = _series(steps, "emb_std", "eff_rank")
    fig.add_trace(go.Scatter(x=x, y=std, mode="lines", line=dict(color="#2ca02c"), name="std"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=rank, mode="lines", line=dict(color="#ff7f0e"), name="rank"), 1, 2)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#999", row=1, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(title_text="step")
    _reference_note(fig, reference)
    return _layout(fig, 280)


def _accuracy_points(watches, epochs) -> tuple[list, list]:
    """(guess points, kNN points) as (step, %) from the monitor's events; both start at the untrained step 0."""
    guess = [(w.step, 100 * w.guess) for w in watches if w.guess is not None]
    knn = [(w.step, 100 * w.knn_top1) for w in watches if w.knn_top1 is not None]
    knn += [(e.step, 100 * e.knn_top1) for e in epochs if e.knn_top1 is not None]
    return guess, knn


ACCURACY_TITLE = "Learning: accuracy of the guess"


def accuracy_figure(watches, epochs, reference=None) -> go.Figure:
    """Explore's guess on the monitor's images (vicreg/training/watch.py) and the per-epoch kNN, each with its
    untrained figure (step 0) as a dashed baseline, and the reference run's curves in grey behind them."""
    guess, knn = _accuracy_points(watches, epochs)
    if not guess and not knn:
        return empty(ACCURACY_TITLE, "appears when the run starts" if watches is not None else "monitor off")
    fig = go.Figure()
    if reference is not None:
        for pts in _accuracy_points(reference.watches, reference.epochs):
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines",
                                         line=dict(color=REFERENCE, width=1.4), name="reference"))
    n = next((w.images for w in watches if w.guess is not None), 0)
    for pts, colour, name in ((guess, "#17becf", f"Explore's guess ({n} test images)"),
                              (knn, "#9467bd", "kNN top-1 (k=200), per epoch")):
        if not pts:
            continue
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                 line=dict(color=colour)))
        if pts[0][0] == 0:
            fig.add_hline(y=pts[0][1], line_dash="dash", line_color=colour, opacity=0.6,
                          annotation_text=f"untrained {pts[0][1]:.1f} %", annotation_position="bottom right")
    fig.add_hline(y=10, line_dash="dot", line_color="#999", annotation_text="chance")
    top = max(p[1] for p in guess + knn)
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(title_text="% right", range=[0, max(50, top + 8)])
    _reference_note(fig, reference)
    _layout(fig, 300, ACCURACY_TITLE)
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.25, x=0))
    return fig


def live_map_figure(state, images: int = 0) -> go.Figure:
    """The monitor's test images at the latest refresh (services/features/live_map.py), one colour per class."""
    title = "Classes separating: the monitor's test images"
    if state is None:
        return empty(title, "appears when the run starts" if images else "monitor off", height=380)
    fig = go.Figure()
    for c, name in enumerate(state.classes):
        m = state.labels == c
        fig.add_trace(go.Scatter(x=np.round(state.coords[m, 0], 2).tolist(), y=np.round(state.coords[m, 1], 2).tolist(),
                                 mode="markers", name=name, marker=dict(size=5, color=PALETTE[c % 10], opacity=0.8),
                                 hovertemplate=f"{name}<extra></extra>"))
    when = "untrained" if state.step == 0 else f"step {state.step}"
    _layout(fig, 380, f"{title} · map {state.count} ({when})")
    fig.update_layout(showlegend=True, legend=dict(itemsizing="constant"), uirevision=None)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x")
    return fig


def per_class_figure(classes: list[str], results: dict[str, dict]) -> go.Figure:
    fig = go.Figure()
    for (name, res), col in zip(results.items(), ("#1f77b4", "#bbb"), strict=False):  # the baseline may be absent
        fig.add_trace(go.Bar(x=classes, y=[100 * v for v in res["per_class"]], name=name, marker_color=col))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="linear-probe accuracy %", range=[0, 100])
    _layout(fig, 320, "Per-class accuracy")
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def confusion_figure(classes: list[str], results: dict[str, dict]) -> go.Figure:
    names = list(results)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"{n}: rows true, columns predicted" for n in names],
                        horizontal_spacing=0.12)
    for i, n in enumerate(names, 1):
        m = np.asarray(results[n]["confusion"], dtype=float)
        frac = m / np.maximum(m.sum(1, keepdims=True), 1)
        fig.add_trace(go.Heatmap(z=frac.round(4).tolist(), x=classes, y=classes, zmin=0, zmax=1, colorscale="Blues",
                                 showscale=i == len(names), customdata=m.tolist(), hovertemplate=CONFUSION_HOVER), 1, i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    return _layout(fig, 440)


def umap_figure(coords: np.ndarray, labels: np.ndarray, indices: np.ndarray, classes: list[str], marker=None,
                title=None) -> go.Figure:
    fig = go.Figure()
    for c, name in enumerate(classes):
        m = labels == c
        fig.add_trace(go.Scattergl(
            x=np.round(coords[m, 0], 3).tolist(), y=np.round(coords[m, 1], 3).tolist(), mode="markers", name=name,
            marker=dict(size=4, color=PALETTE[c % 10], opacity=0.7),
            text=[f"{name} · test #{i}" for i in indices[m]], hovertemplate="%{text}<extra></extra>"))
    if marker is not None:
        fig.add_trace(marker_trace(marker))
    _layout(fig, 640, title)
    fig.update_layout(showlegend=True, legend=dict(itemsizing="constant"))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x")
    return fig


def marker_trace(marker: dict) -> go.Scatter:
    """The explored image's star on the map."""
    label = marker.get("label", "your image")
    return go.Scatter(x=[marker["x"]], y=[marker["y"]], mode="markers+text", name="your image", text=[label],
                      textposition="top center", hovertemplate=f"{label}<extra></extra>",
                      marker=dict(symbol="star", size=22, color="black", line=dict(color="white", width=2)))


def with_marker(base: dict, marker: dict | None) -> str:
    """A map's plotly JSON (`base`: the figure without a star, as a dict) with the star added. Building
    a plotly Figure of thousands of points costs tens of ms of template validation; this reuses one."""
    extra = [marker_trace(marker).to_plotly_json()] if marker else []
    return json.dumps({**base, "data": base["data"] + extra}, cls=PlotlyJSONEncoder)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def map_background(coords: np.ndarray, labels: np.ndarray, classes: list[str],
                   size: int = 360) -> tuple[Image.Image, callable]:
    """Static map picture for the Explore tab and a function mapping map coords to its pixels."""
    lo, hi = coords.min(0), coords.max(0)
    pad, legend_h = 12, 16 * ((len(classes) + 4) // 5)
    scale = (size - 2 * pad) / np.maximum(hi - lo, 1e-9)

    def to_px(xy) -> tuple[float, float]:
        p = (np.asarray(xy) - lo) * scale + pad
        return float(p[0]), float(size - p[1])  # y up

    im = Image.new("RGB", (size, size + legend_h), "white")
    d = ImageDraw.Draw(im)
    for (x, y), lab in zip(coords, labels, strict=True):
        px, py = to_px((x, y))
        d.rectangle([px - 1, py - 1, px + 1, py + 1], fill=_rgb(PALETTE[int(lab) % 10]))
    font = ImageFont.load_default()
    for i, name in enumerate(classes):
        x0, y0 = 6 + (i % 5) * (size // 5), size + 2 + 16 * (i // 5)
        d.rectangle([x0, y0 + 3, x0 + 8, y0 + 11], fill=_rgb(PALETTE[i % 10]))
        d.text((x0 + 12, y0), name, fill="black", font=font)
    return im, to_px


def map_with_marker(background: Image.Image, to_px, xy) -> np.ndarray:
    im = background.copy()
    d = ImageDraw.Draw(im)
    x, y = to_px(xy)
    for r, col in ((11, "white"), (9, "black")):
        d.line([x - r, y, x + r, y], fill=col, width=5 if col == "white" else 3)
        d.line([x, y - r, x, y + r], fill=col, width=5 if col == "white" else 3)
    d.ellipse([x - 14, y - 14, x + 14, y + 14], outline="black", width=2)
    return np.asarray(im)


def embedding_strip(vec: np.ndarray, cols: int = 32, cell: int = 10) -> np.ndarray:
    """An embedding as a heat grid of `cols` cells a row (512-d: 16 x 32; each value / max |value|; blue < 0 < red)."""
    v = np.asarray(vec, dtype=np.float32)
    v = v / max(float(np.abs(v).max()), 1e-12)
    rows = int(np.ceil(v.size / cols))
    grid = np.zeros(rows * cols, dtype=np.float32)
    grid[: v.size] = v
    grid = grid.reshape(rows, cols)
    pos, neg = np.clip(grid, 0, 1), np.clip(-grid, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], -1)  # white at 0, red positive, blue negative
    rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return np.kron(rgb, np.ones((cell, cell, 1), dtype=np.uint8))


def upscale(hwc: np.ndarray, factor: int = 4) -> np.ndarray:
    """Nearest-neighbour enlargement so 32x32 images look crisp in the page."""
    return np.kron(hwc, np.ones((factor, factor, 1), dtype=np.uint8))
