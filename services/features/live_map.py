"""The Train tab's live map: the learning monitor's test images (vicreg/training/watch.py) laid out in 2-D at each of
its points, so a visitor sees the classes separate while the model trains.

Each layout is a small exact t-SNE (numpy only: a few hundred points, well under a second of CPU) started
from the previous layout, then turned, scaled and moved onto it (orthogonal Procrustes), so points move
rather than jump between refreshes. UMAP, as the UMAP tab uses, costs 15-45 s of CPU per fit in a fresh
process here (numba), far more than a refresh every 20 s of training may take. The layout runs in a child
process at a low priority (services/features/children.py), as the Explore banks do, though not the lowest: a map
that waits for a busy CPU to fall idle arrives after the run it shows has moved on, and one takes a few
hundred milliseconds of CPU every monitor point (docs/recipes.md measures the cost):

    python -m services.features.live_map features.npy out.npy [previous.npy]
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass

import numpy as np

PERPLEXITY = 20.0
MAP_NICE = 10  # below training (0), above the feature banks (19)
FIRST_ITERS, NEXT_ITERS = 400, 120  # a fresh layout needs the early exaggeration phase; a refresh starts near


def _sq_dists(x: np.ndarray) -> np.ndarray:
    s = (x * x).sum(1)
    return np.maximum(s[:, None] + s[None, :] - 2 * x @ x.T, 0.0)


def affinities(features: np.ndarray, perplexity: float = PERPLEXITY) -> np.ndarray:
    """t-SNE's symmetric input affinities P (N, N) over cosine geometry (rows L2-normalised first)."""
    x = features.astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    d = _sq_dists(x)
    n = d.shape[0]
    target = np.log(min(perplexity, (n - 1) / 3))
    beta = np.ones(n)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    np.fill_diagonal(d, np.inf)
    for _ in range(50):  # every row's precision by bisection at once, to the wanted entropy
        p = np.exp(-(d - d.min(1, keepdims=True)) * beta[:, None])
        p /= p.sum(1, keepdims=True)
        h = -(p * np.log(np.maximum(p, 1e-300))).sum(1)
        high = h > target  # too flat: sharpen
        lo = np.where(high, beta, lo)
        hi = np.where(high, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2, (lo + hi) / 2)
    p = (p + p.T) / (2 * n)
    return np.maximum(p, 1e-12)


def tsne(p: np.ndarray, init: np.ndarray, iters: int, exaggerate: int = 0) -> np.ndarray:
    """Gradient descent on t-SNE's KL divergence from `init` (momentum and gains as van der Maaten's)."""
    y = init.astype(np.float64).copy()
    n = y.shape[0]
    lr = max(n / 12.0, 50.0)
    step, gains = np.zeros_like(y), np.ones_like(y)
    for it in range(iters):
        pe = p * (12.0 if it < exaggerate else 1.0)
        num = 1.0 / (1.0 + _sq_dists(y))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (pe - q) * num
        grad = 4.0 * (w.sum(1)[:, None] * y - w @ y)
        gains = np.where(np.sign(grad) != np.sign(step), gains + 0.2, gains * 0.8).clip(0.01)
        step = (0.5 if it < 100 else 0.8) * step - lr * gains * grad
        y += step
        y -= y.mean(0)
    return y


def pca2(features: np.ndarray) -> np.ndarray:
    """The first layout's start: the two principal directions, scaled small as t-SNE wants."""
    x = features.astype(np.float64)
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:2].T
    return 1e-2 * y / max(float(y[:, 0].std()), 1e-12)


def align(y: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """`y` turned (or mirrored), scaled and moved to lie as close as it can to `previous` (Procrustes)."""
    a, b = y - y.mean(0), previous - previous.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    rot = u @ vt
    scale = s.sum() / max(float((a * a).sum()), 1e-12)
    return scale * a @ rot + previous.mean(0)


def layout(features: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """The map of `features`: fresh (PCA start, early exaggeration) or refreshed from `previous`, aligned to it."""
    p = affinities(features)
    if previous is None or previous.shape != (features.shape[0], 2):
        return tsne(p, pca2(features), FIRST_ITERS, exaggerate=100).astype(np.float32)
    start = previous - previous.mean(0)
    y = tsne(p, start, NEXT_ITERS)
    return align(y, previous).astype(np.float32)


@dataclass
class MapState:
    run_id: int
    step: int
    coords: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,)
    classes: list[str]
    count: int  # maps drawn in this run so far (1 = the untrained one)


class LiveMap:
    """One run's maps, each laid out in a child process; `offer` hands it the latest monitor point and
    `latest` returns the newest finished map. One layout at a time: a point that arrives while one is being
    drawn waits, and only the newest waiting one is drawn next."""

    def __init__(self, folder: str):
        self.folder = folder  # made when the first map is drawn
        self._lock = threading.Lock()
        self._state: MapState | None = None
        self._pending: tuple | None = None
        self._busy = False
        self._offered: tuple[int, int] | None = None

    def offer(self, run_id: int, watch) -> None:
        """`watch`: a vicreg.runfiles.events.WatchEvent; one without features (from a metrics file) is passed over."""
        if watch.features is None or watch.labels is None:
            return
        step = watch.step
        with self._lock:
            if self._offered is not None and self._offered >= (run_id, step):
                return
            self._offered = (run_id, step)
            self._pending = (run_id, step, watch.features, watch.labels, watch.classes or [])
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._drain, daemon=True, name="vicreg-live-map").start()

    def latest(self, run_id: int) -> MapState | None:
        with self._lock:
            return self._state if self._state is not None and self._state.run_id == run_id else None

    def _drain(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    self._busy = False
                    return
                state = self._state
            run_id, step, feats, labels, classes = job
            previous = state.coords if state is not None and state.run_id == run_id else None
            try:
                coords = self._draw(feats, previous)
            except (OSError, RuntimeError, ValueError):
                continue  # the next point tries again; the chart keeps the last map
            with self._lock:
                count = state.count + 1 if previous is not None else 1
                self._state = MapState(run_id, step, coords, np.asarray(labels), list(classes), count)

    def _draw(self, features: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        os.makedirs(self.folder, exist_ok=True)
        src, out, prev = (os.path.join(self.folder, f) for f in ("features.npy", "map.npy", "previous.npy"))
        np.save(src, np.asarray(features, dtype=np.float32))
        args = [src, out]
        if previous is not None:
            np.save(prev, previous)
            args.append(prev)
        from .children import ROOT

        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # beside training: one core
        done = subprocess.run([sys.executable, "-m", "services.features.live_map", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the map's layout failed: {done.stderr[-400:]}")
        return np.load(out, allow_pickle=False)


def main(argv: list[str]) -> int:
    from .children import lower_priority, watch_parent

    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    lower_priority(MAP_NICE)
    watch_parent()
    feats = np.load(argv[0], allow_pickle=False)
    previous = np.load(argv[2], allow_pickle=False) if len(argv) > 2 else None
    np.save(argv[1], layout(feats, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
