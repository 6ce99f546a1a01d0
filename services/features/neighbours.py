"""Nearest neighbours, kNN class votes and map positions against a feature index (numpy; the vote itself is
vicreg.training.evaluate's rule, so Explore's guess is the one the training monitor measures).

A new image's map position is the similarity-weighted mean of its nearest neighbours' positions
(milliseconds; no fitted UMAP object is kept, so nothing has to be pickled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vicreg.training.evaluate import GUESS_K, GUESS_T, class_votes


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest(bank: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the (L2-normalised) bank most cosine-similar to `query`: (rows, similarities),
    best first. `exclude` drops one row (leave-one-out when the query is a bank image)."""
    sims = bank @ l2_normalize(query)
    if exclude is not None and 0 <= exclude < sims.shape[0]:
        sims[exclude] = -np.inf
    k = min(k, sims.shape[0] - (exclude is not None))
    rows = np.argpartition(-sims, k - 1)[:k]
    rows = rows[np.argsort(-sims[rows], kind="stable")]
    return rows, sims[rows]


def knn_vote(sims: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float = GUESS_T) -> np.ndarray:
    """Class probabilities from one query's neighbours (their similarities and labels): vicreg.training.evaluate's vote
    (class_votes, weights exp(sim / T)), normalised."""
    votes = class_votes(torch.tensor(np.asarray(sims))[None], torch.tensor(np.asarray(labels, dtype=np.int64))[None],
                        num_classes, temperature, relative=True)[0].numpy()
    return votes / max(float(votes.sum()), 1e-12)


def project(sims: np.ndarray, coords: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Map position of a new point: the softmax(sim / T)-weighted mean of its neighbours' positions."""
    w = np.exp((sims - sims.max()) / temperature)
    return (w[:, None] * coords).sum(0) / w.sum()


@dataclass
class Neighbour:
    index: int  # position in the test split
    label: int
    cls: str
    similarity: float


@dataclass
class Query:
    neighbours: list[Neighbour]
    guess: dict[str, float]  # class -> kNN probability
    rows: np.ndarray  # index rows, best first (at least as many as neighbours)
    sims: np.ndarray


@dataclass
class FeatureIndex:
    key: str
    features: np.ndarray  # (N, D) float32, L2-normalised
    labels: np.ndarray  # (N,) int64
    indices: np.ndarray  # (N,) positions in the test split
    classes: list[str]

    def row_of(self, test_index: int | None) -> int | None:
        if test_index is None:
            return None
        hit = np.nonzero(self.indices == test_index)[0]
        return int(hit[0]) if hit.size else None

    def query(self, emb: np.ndarray, k: int = 8, vote_k: int = GUESS_K, exclude_test_index: int | None = None) -> Query:
        rows, sims = nearest(self.features, emb, max(k, vote_k), self.row_of(exclude_test_index))
        probs = knn_vote(sims[:vote_k], self.labels[rows[:vote_k]], len(self.classes))
        nbrs = [Neighbour(int(self.indices[r]), int(self.labels[r]), self.classes[self.labels[r]], float(s))
                for r, s in zip(rows[:k], sims[:k], strict=True)]
        return Query(nbrs, {c: float(p) for c, p in zip(self.classes, probs, strict=True)}, rows, sims)
