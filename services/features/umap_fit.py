"""UMAP of a feature matrix, run in a child process so the app never imports umap/numba itself.

    python -m services.features.umap_fit features.npy out.npy [n_neighbors] [min_dist] [seed]

Reads and writes plain .npy files (no pickle); runs at the lowest priority and ends when its parent
does (services/features/children.py). The k-nearest-neighbour graph is computed here
exactly (cosine, one matrix product per chunk) and handed to UMAP as `precomputed_knn`, which
skips pynndescent and its numba compilation, the larger part of a first fit at the map sizes the app
uses (docs/benchmarks.md has the timings). Only numpy, umap, vicreg.runfiles.files and services.features.children are
imported; umap inside `fit`, so that importing this module (tests do) stays cheap.
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from services.features.children import lower_priority, watch_parent
from vicreg.runfiles.files import atomic_write


def knn_graph(x: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN (self included first, as UMAP expects): (N, k) int32 indices and
    (N, k) float32 euclidean distances between the L2-normalised rows."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x.astype(np.float32)
    n = x.shape[0]
    idx = np.empty((n, k), dtype=np.int32)
    dist = np.empty((n, k), dtype=np.float32)
    for i in range(0, n, chunk):
        sim = x[i : i + chunk] @ x.T
        rows = np.arange(sim.shape[0])
        sim[rows, rows + i] = 2.0  # self first, whatever rounding says
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, part, 1)
        order = np.argsort(-s, axis=1)
        idx[i : i + chunk] = np.take_along_axis(part, order, 1)
        s = np.minimum(np.take_along_axis(s, order, 1), 1.0)
        dist[i : i + chunk] = np.sqrt(np.maximum(2.0 - 2.0 * s, 0.0))
    return idx, dist


def fit(x: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    n = x.shape[0]
    if n < 8:  # too few points for a graph: a deterministic line keeps callers simple
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, dtype=np.float32)], 1)
    import umap  # here, not at the top: numba's import costs seconds and only the child needs it

    k = max(2, min(n_neighbors, n - 1))
    idx, dist = knn_graph(x, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "transform will be unavailable": we project by neighbours
        reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, random_state=seed, n_jobs=1,
                            precomputed_knn=(idx, dist, None), init="spectral" if n > k + 1 else "random")
        return reducer.fit_transform(x).astype(np.float32)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    lower_priority()  # before numba starts its threads: they inherit it
    watch_parent()
    src, out = argv[0], argv[1]
    n_neighbors = int(argv[2]) if len(argv) > 2 else 15
    min_dist = float(argv[3]) if len(argv) > 3 else 0.1
    seed = int(argv[4]) if len(argv) > 4 else 0
    t0 = time.perf_counter()
    x = np.load(src, allow_pickle=False)
    y = fit(x, n_neighbors, min_dist, seed)
    atomic_write(out, lambda tmp: np.save(tmp, y))
    print(f"umap {x.shape} -> {y.shape} in {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
