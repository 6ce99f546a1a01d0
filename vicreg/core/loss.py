"""VICReg loss (Bardes, Ponce & LeCun, 2021), each term a small pure function.

All terms are computed in float32 even under bf16 autocast: the covariance sums ~4M squared
entries and the variance takes a sqrt near zero, both of which lose too much in bf16.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LossConfig


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


def variance_loss(z: Tensor, eps: float = LossConfig.eps) -> Tensor:
    """Hinge on each dimension's std across the batch: pushes every std up to 1 (prevents collapse)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances, divided by the dimension (decorrelates dimensions)."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    if n >= d:
        cov = (z.T @ z) / (n - 1)
        # sum of all squared entries minus the diagonal's: avoids building an off-diagonal mask
        return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d
    # Fewer samples than dimensions (64 embeddings of 2,048): the squared entries of the d x d covariance sum to
    # those of the n x n Gram matrix, since trace((Z'Z)^2) = trace((ZZ')^2), d/n times fewer products (32x in the
    # visitor demos), forward and backward. Its diagonal is each dimension's variance, computed apart.
    gram = (z @ z.T) / (n - 1)
    variances = z.pow(2).sum(dim=0) / (n - 1)
    return (gram.pow(2).sum() - variances.pow(2).sum()) / d


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    inv_coeff: float = LossConfig.inv_coeff,
    var_coeff: float = LossConfig.var_coeff,
    cov_coeff: float = LossConfig.cov_coeff,
    eps: float = LossConfig.eps,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> VICRegTerms:
    """Total loss and its three unweighted terms, as in the official implementation.

    `gather` (distributed training: `vicreg.core.distributed.full_gather`) turns this rank's embeddings
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



# ------------------------------------------------------------------ more than two views (augment.views > 2)
# VICReg's three terms over N views of each image (z_1..z_N, each (n, d)), each scaled so that N = 2 gives
# the two-view terms above: the loss weights keep their meaning for any N. The trainer keeps N = 2 on
# vicreg_loss itself (the same floating-point operations as always); these equal it up to rounding.


def _check_views(zs: Sequence[Tensor], batch: int | None = None) -> None:
    if len(zs) < 2:
        raise ValueError(f"VICReg needs at least 2 views of each image, got {len(zs)}")
    for z in zs[1:]:
        _check(zs[0], z, batch)


def multiview_invariance(zs: Sequence[Tensor]) -> Tensor:
    """The mean over all pairs of views of their mean squared distance (the two-view term for each pair).

    Computed through the views' mean zbar, in O(N) instead of O(N^2): sum_{i<j} |z_i - z_j|^2 =
    N sum_v |z_v - zbar|^2, so the mean over the N(N-1)/2 pairs is 2N/(N-1) times the mean over views of
    |z_v - zbar|^2. Pulling every view towards the mean (EMP-SSL) and comparing all pairs are then the
    same loss; this form says which scale makes N = 2 the two-view term (1/4 of it without the factor).
    """
    n = len(zs)
    centre = torch.stack(list(zs)).mean(0)
    to_centre = torch.stack([F.mse_loss(z, centre) for z in zs]).mean()
    return to_centre * (2 * n / (n - 1))


def multiview_variance(zs: Sequence[Tensor], eps: float = LossConfig.eps) -> Tensor:
    """Each view's variance hinge, averaged over views (the two-view term averages its two)."""
    return torch.stack([variance_loss(z, eps) for z in zs]).mean()


def multiview_covariance(zs: Sequence[Tensor]) -> Tensor:
    """Each view's covariance term, averaged over views and times 2: the two-view term (like the official
    code) sums its two views', so the covariance weight means the same for any number of views."""
    return 2 * torch.stack([covariance_loss(z) for z in zs]).mean()


def multiview_loss(
    zs: Sequence[Tensor],
    inv_coeff: float = LossConfig.inv_coeff,
    var_coeff: float = LossConfig.var_coeff,
    cov_coeff: float = LossConfig.cov_coeff,
    eps: float = LossConfig.eps,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> VICRegTerms:
    """vicreg_loss over N >= 2 views of each image: invariance over every pair of views, variance and
    covariance per view; `gather` as in vicreg_loss (invariance local, the rest over the global batch)."""
    _check_views(zs, 2 if gather is not None else None)
    with torch.autocast(zs[0].device.type, enabled=False):  # float32 for the same reasons as vicreg_loss
        wide = torch.promote_types(zs[0].dtype, torch.float32)
        zs = [z.to(wide) for z in zs]
        inv = multiview_invariance(zs)
        if gather is not None:
            zs = [gather(z) for z in zs]
            _check_views(zs)
        var = multiview_variance(zs, eps)
        cov = multiview_covariance(zs)
    total = inv_coeff * inv + var_coeff * var + cov_coeff * cov
    return VICRegTerms(total, inv, var, cov)
