"""Explore's answers for one embedded image, from the test images' feature banks (services/features/maps.py): which
bank answers (the best there is at once, then better ones as the background work builds them), which of its
rows to leave out, and what it answers (neighbours, kNN guess, place on its map). The page shows them
(ui/explore_handlers.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .features.banks import BANK, MAP, Stage
from .features.maps import Bank, MapStore
from .features.neighbours import Query, project

N_NEIGHBOURS = 8
VOTE_K = 20
MAP_K = 10  # the nearest test images whose map positions place a new image on the map
WAIT_SECONDS = 900  # how long one answer follows the background work; the page's status line goes on after


def better(bank: Bank, shown: Bank | None) -> bool:
    """The full test set's bank beats the sample's; the same bank with its map beats it without."""
    if shown is None or (shown.stand_in and not bank.stand_in):
        return True
    return bank.where == shown.where and shown.coords is None and bank.coords is not None


def leave_out(bank: Bank, test_index: int | None, pixels: np.ndarray) -> int | None:
    """Leave-one-out: a test image's own row. In the sample standing in for the dataset it is found
    by its pixels (the two number their test images differently)."""
    if test_index is None or not bank.stand_in:
        return test_index
    flat = bank.images.reshape(len(bank.images), -1).numpy()
    same = np.flatnonzero((flat == pixels.reshape(1, -1)).all(1))
    return int(bank.index.indices[same[0]]) if same.size else None


@dataclass
class Found:
    """One bank's answer for an embedding."""

    bank: Bank
    query: Query  # neighbours and guess
    xy: np.ndarray | None  # the place on the bank's map, when it has one


def answer(bank: Bank, vec: np.ndarray, test_index: int | None, pixels: np.ndarray) -> Found:
    """The bank's neighbours and guess for the embedding `vec` of `pixels` (test image `test_index`, or None)."""
    q = bank.index.query(vec, N_NEIGHBOURS, VOTE_K, exclude_test_index=leave_out(bank, test_index, pixels))
    xy = project(q.sims[:MAP_K], bank.coords[q.rows[:MAP_K]]) if bank.coords is not None else None
    return Found(bank, q, xy)


@dataclass
class Step:
    """Where the checkpoint's background work stands, and a better answer when one became possible."""

    bank: Stage | None
    map: Stage | None
    found: Found | None = None


def follow(maps: MapStore, path: str, vec: np.ndarray, test_index: int | None, pixels: np.ndarray,
           wait_seconds: float = WAIT_SECONDS) -> Iterator[Step]:
    """The best answer there is, then better ones as the background work makes them possible: a step at
    least every second while that work goes on, until it is done or `wait_seconds` pass."""
    shown: Bank | None = None
    if (now := maps.best(path)) is None or now.stand_in:
        maps.need_bank(path)  # an API caller's checkpoint too; a page's is already on its way
    deadline = time.perf_counter() + wait_seconds
    while True:
        step = Step(maps.stage(BANK, path), maps.stage(MAP, path))  # before `best`: a stage done is in it
        bank = maps.best(path)
        if bank is not None and better(bank, shown):
            step.found, shown = answer(bank, vec, test_index, pixels), bank
        yield step
        pending = [s for s in (step.bank, step.map) if s is not None and not s.done]
        if not pending or time.perf_counter() > deadline:
            return
        maps.pause(pending[0], 1.0)


def example_indices(labels: np.ndarray, per_class: int) -> list[int]:
    """The first `per_class` test images of every class, by their test labels."""
    return [int(i) for c in range(int(labels.max()) + 1) for i in np.nonzero(labels == c)[0][:per_class]]
