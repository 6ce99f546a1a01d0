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


def loss_figure(steps) -> go.Figure:
    if not steps:
        return empty("Loss")
    x, tot, inv, var, cov = _thin([s.step for s in steps], [s.loss for s in steps], [s.invariance for s in steps],
                                  [s.variance for s in steps], [s.covariance for s in steps])
    titles = ("total loss", "invariance (MSE, unweighted)", "variance (hinge on std, unweighted)",
              "covariance (off-diagonal, unweighted)")
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.16, horizontal_spacing=0.08)
    colours = ("#222", "#1f77b4", "#2ca02c", "#d62728")
    for (r, c), y, col in zip([(1, 1), (1, 2), (2, 1), (2, 2)], (tot, inv, var, cov), colours, strict=True):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=col, width=1.6), name="loss"), r, c)
    fig.update_xaxes(title_text="step", row=2)
    return _layout(fig, 430)


def lr_figure(steps) -> go.Figure:
    if not steps:
        return empty("Learning rate")
    x, lr = _thin([s.step for s in steps], [s.lr for s in steps])
    fig = go.Figure(go.Scatter(x=x, y=lr, mode="lines", line=dict(color="#9467bd")))
    fig.update_xaxes(title_text="step")
    return _layout(fig, 260, "Learning rate")


def health_figure(steps, batch_size: int | None = None) -> go.Figure:
    """Per-dimension std and effective rank of the embeddings: both fall when the model collapses."""
    if not steps:
        return empty("Embedding std / effective rank")
    x, std, rank = _thin([s.step for s in steps], [s.emb_std for s in steps], [s.eff_rank for s in steps])
    rank_title = f"effective rank (max {batch_size})" if batch_size else "effective rank"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean per-dimension std (target 1)", rank_title))
    fig.add_trace(go.Scatter(x=x, y=std, mode="lines", line=dict(color="#2ca02c")), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=rank, mode="lines", line=dict(color="#ff7f0e")), 1, 2)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#999", row=1, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(title_text="step")
    return _layout(fig, 280)


def knn_figure(epochs) -> go.Figure:
    pts = [(e.epoch, e.knn_top1) for e in epochs if e.knn_top1 is not None]
    if not pts:
        return empty("kNN top-1 per epoch", "appears after the first epoch" if not epochs else "kNN monitor disabled")
    fig = go.Figure(go.Scatter(x=[p[0] for p in pts], y=[100 * p[1] for p in pts], mode="lines+markers",
                               line=dict(color="#17becf")))
    fig.add_hline(y=10, line_dash="dot", line_color="#999", annotation_text="chance")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="%", range=[0, max(40, 100 * max(p[1] for p in pts) + 5)])
    return _layout(fig, 260, "kNN top-1 per epoch")


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
    """The 512-d embedding as a 16x32 heat grid (each value / max |value|; blue < 0 < red)."""
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
