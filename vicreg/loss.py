"""VICReg loss (Bardes, Ponce & LeCun, 2021), each term a small pure function.

All terms are computed in float32 even under bf16 autocast: the covariance sums ~4M squared
entries and the variance takes a sqrt near zero, both of which lose too much in bf16.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class VICRegTerms(NamedTuple):
    total: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _check(z_a: Tensor, z_b: Tensor, batch: int | None = None) -> None:
    """`batch`: the size variance and covariance see (the global batch when gathered)."""
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (batch, dim), got shapes {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if z_a.shape != z_b.shape:
        raise ValueError(f"the two views must have the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if (z_a.shape[0] if batch is None else batch) < 2:
        raise ValueError("VICReg needs a batch of at least 2 (variance and covariance are undefined for 1), "
                         f"got {z_a.shape[0]}")


def invariance_loss(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Mean squared distance between the two views' embeddings."""
    return F.mse_loss(z_a, z_b)


def variance_loss(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Hinge on each dimension's std across the batch: pushes every std up to 1 (prevents collapse)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances, divided by the dimension (decorrelates dimensions)."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    # sum of all squared entries minus the diagonal's: avoids building an off-diagonal mask
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    inv_coeff: float = 25.0,
    var_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> VICRegTerms:
    """Total loss and its three unweighted terms, as in the official implementation.

    `gather` (distributed training: `vicreg.distributed.full_gather`) turns this rank's embeddings
    into the global batch for variance and covariance; invariance is per pair and stays local.
    """
    _check(z_a, z_b, 2 if gather is not None else None)
    # autocast off: otherwise the covariance matmul would run in bf16 despite the fp32 inputs
    with torch.autocast(z_a.device.type, enabled=False):
        wide = torch.promote_types(z_a.dtype, torch.float32)  # float32, or float64 when given float64
        z_a, z_b = z_a.to(wide), z_b.to(wide)
        inv = invariance_loss(z_a, z_b)
        if gather is not None:
            z_a, z_b = gather(z_a), gather(z_b)
            _check(z_a, z_b)
        var = 0.5 * (variance_loss(z_a, eps) + variance_loss(z_b, eps))
        cov = covariance_loss(z_a) + covariance_loss(z_b)
    total = inv_coeff * inv + var_coeff * var + cov_coeff * cov
    return VICRegTerms(total, inv, var, cov)


class VICRegLoss(torch.nn.Module):
    """Thin module wrapper holding the coefficients."""

    def __init__(self, inv_coeff: float = 25.0, var_coeff: float = 25.0, cov_coeff: float = 1.0, eps: float = 1e-4):
        super().__init__()
        self.inv_coeff, self.var_coeff, self.cov_coeff, self.eps = inv_coeff, var_coeff, cov_coeff, eps

    def forward(self, z_a: Tensor, z_b: Tensor) -> VICRegTerms:
        return vicreg_loss(z_a, z_b, self.inv_coeff, self.var_coeff, self.cov_coeff, self.eps)
