"""Embedding health: the effective rank, and the watch that warns when the embeddings collapse.

A collapse is what VICReg's variance and covariance terms exist to prevent (set the variance weight
to 0 to watch one happen); the run is not stopped, because that is the lesson.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the normalised singular values (Roy & Vetterli, 2007): ~batch size for
    well-spread embeddings, falls towards 1 as they collapse onto a few directions.

    The singular values come from the eigenvalues of the smaller Gram matrix (B x B, or D x D when
    the batch is larger): one matrix product and a small symmetric eigensolve instead of an SVD.
    Returns a 0-d tensor on z's device, so the caller reads every metric back in one transfer.
    """
    zc = torch.nan_to_num((z - z.mean(0)).float())  # a NaN batch is reported by the loss check, not here
    gram = zc @ zc.T if zc.shape[0] <= zc.shape[1] else zc.T @ zc
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * (p + 1e-12).log()).sum())


@dataclass
class CollapseWatch:
    """Warns once when the embeddings' mean per-dimension std, or their effective rank, stays under
    its threshold for `steps` logged steps in a row; warns again only after they recover."""

    min_std: float = 0.02  # healthy runs sit at 0.2-1; a collapsed one falls to ~0
    min_rank: float = 4.0  # healthy runs use most of the batch's directions (tens)
    steps: int = 20
    low: int = 0
    warned: bool = False

    def update(self, step: int, emb_std: float, eff_rank: float) -> str | None:
        if emb_std >= self.min_std and eff_rank >= self.min_rank:
            self.low, self.warned = 0, False
            return None
        self.low += 1
        if self.low < self.steps or self.warned:
            return None
        self.warned = True
        return (f"collapse at step {step}: for {self.steps} logged steps the embeddings' std stayed under "
                f"{self.min_std} or their effective rank under {self.min_rank:g} (now std {emb_std:.4f}, rank "
                f"{eff_rank:.1f}); every image is mapping to nearly the same point. Keep the variance weight "
                "above 0 to prevent it.")
