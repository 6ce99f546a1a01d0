"""The loss against a float64 reference written directly from the paper's equations (Sec. 3.1-3.2)."""
import math

import pytest
import torch

from vicreg.core.loss import (
    covariance_loss,
    invariance_loss,
    multiview_covariance,
    multiview_invariance,
    multiview_loss,
    multiview_variance,
    variance_loss,
    vicreg_loss,
)


def reference(z_a, z_b, lam=25.0, mu=25.0, nu=1.0, eps=1e-4):
    """Loops over dimensions and pairs in float64, no shared code with vicreg.core.loss."""
    za, zb = z_a.double().tolist(), z_b.double().tolist()
    n, d = len(za), len(za[0])

    def col(z, j):
        return [z[i][j] for i in range(n)]

    def v(z):  # v(Z) = 1/d sum_j max(0, gamma - S(z^j, eps)), S = sqrt(Var + eps), gamma = 1
        tot = 0.0
        for j in range(d):
            c = col(z, j)
            m = sum(c) / n
            var = sum((x - m) ** 2 for x in c) / (n - 1)
            tot += max(0.0, 1.0 - math.sqrt(var + eps))
        return tot / d

    def c(z):  # c(Z) = 1/d sum_{i != j} [C(Z)]_{ij}^2, C(Z) = 1/(n-1) sum (z - zbar)(z - zbar)^T
        means = [sum(col(z, j)) / n for j in range(d)]
        tot = 0.0
        for p in range(d):
            for q in range(d):
                if p != q:
                    cov = sum((z[i][p] - means[p]) * (z[i][q] - means[q]) for i in range(n)) / (n - 1)
                    tot += cov**2
        return tot / d

    # s(Z, Z') = 1/n sum_i ||z_i - z'_i||^2 ; the official code uses F.mse_loss, i.e. this / d
    s = sum((za[i][j] - zb[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = (v(za) + v(zb)) / 2
    cov = c(za) + c(zb)
    return lam * s + mu * var + nu * cov, s, var, cov


# (n, d): more samples than dimensions, and fewer (the training case, 64 embeddings of 2,048: the covariance term
# is then summed over the n x n Gram matrix)
@pytest.mark.parametrize("seed,scale,n,d", [(0, 1.0, 16, 12), (1, 0.1, 16, 12), (2, 3.0, 16, 12), (3, 1.0, 6, 20),
                                            (4, 3.0, 5, 24)])
def test_matches_float64_reference(seed, scale, n, d):
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g) * scale
    z_b = z_a + 0.3 * torch.randn(n, d, generator=g)
    got = vicreg_loss(z_a, z_b)
    want = reference(z_a, z_b)
    for g_, w in zip(got, want, strict=True):
        assert abs(g_.item() - w) <= 1e-5 * abs(w) + 1e-7, (g_.item(), w)


def test_coefficients_are_applied():
    z_a, z_b = torch.randn(8, 6), torch.randn(8, 6)
    t = vicreg_loss(z_a, z_b, inv_coeff=2.0, var_coeff=0.0, cov_coeff=5.0)
    assert torch.allclose(t.total, 2.0 * t.invariance + 5.0 * t.covariance)


def test_identical_views_have_zero_invariance():
    z = torch.randn(32, 64)
    t = vicreg_loss(z, z.clone())
    assert t.invariance.item() == 0.0
    assert t.covariance.item() > 0


def test_symmetric_in_the_two_views():
    z_a, z_b = torch.randn(32, 64), torch.randn(32, 64)
    a, b = vicreg_loss(z_a, z_b), vicreg_loss(z_b, z_a)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=1e-6)


def _covariance_by_definition(z):
    """The covariance term as the paper writes it: the d x d covariance matrix's squared off-diagonal entries."""
    n, d = z.shape
    c = z - z.mean(0)
    cov = c.T @ c / (n - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


@pytest.mark.parametrize("n,d", [(8, 64), (64, 2048), (64, 8)])
def test_covariance_term_and_its_gradient_equal_the_d_by_d_definition(n, d):
    z = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n + d)) * 2 + 0.5
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    got, want = covariance_loss(z1), _covariance_by_definition(z2)
    got.backward()
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)


def test_collapse_is_penalised_and_whitened_data_is_not():
    collapsed = torch.ones(64, 16) + 1e-4 * torch.randn(64, 16)
    assert variance_loss(collapsed).item() == pytest.approx(0.99, abs=0.01)
    # whitened: centred columns made orthonormal (QR keeps them orthogonal to the ones vector),
    # scaled so each column's std is exactly 1 and off-diagonal covariances are 0
    x = torch.randn(64, 16, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    white = (q * math.sqrt(63)).float()
    assert variance_loss(white).item() == pytest.approx(0.0, abs=1e-4)
    assert covariance_loss(white).item() < 1e-8
    assert invariance_loss(white, white).item() == 0.0


def test_bf16_autocast_does_not_degrade_the_loss():
    z_a, z_b = torch.randn(128, 256), torch.randn(128, 256)
    ref = vicreg_loss(z_a, z_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vicreg_loss(z_a, z_b)
    assert got.covariance.dtype == torch.float32
    assert torch.allclose(got.covariance, ref.covariance, rtol=1e-5)


@pytest.mark.parametrize(
    "a,b,msg",
    [
        ((1, 8), (1, 8), "at least 2"),
        ((4, 8), (4, 7), "same shape"),
        ((4, 8), (5, 8), "same shape"),
        ((4, 8, 2), (4, 8, 2), "2-D"),
    ],
)
def test_rejects_bad_inputs(a, b, msg):
    with pytest.raises(ValueError, match=msg):
        vicreg_loss(torch.randn(*a), torch.randn(*b))


def test_a_gather_gives_variance_and_covariance_over_the_global_batch_and_keeps_invariance_local():
    g = torch.Generator().manual_seed(3)
    z_a, z_b = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    whole = vicreg_loss(z_a, z_b)
    rest = [z_a[4:], z_b[4:]]  # rank 1's rows, in the order the loss gathers (view a, then view b)

    def gather(z):  # as rank 0 of 2 sees it: its own rows first, then rank 1's
        return torch.cat([z, rest.pop(0)])

    part = vicreg_loss(z_a[:4], z_b[:4], gather=gather)
    assert rest == []
    assert part.variance == pytest.approx(whole.variance.item(), rel=1e-6)
    assert part.covariance == pytest.approx(whole.covariance.item(), rel=1e-6)
    assert part.invariance == pytest.approx(invariance_loss(z_a[:4], z_b[:4]).item(), rel=1e-6)


# ------------------------------------------------------------------ more than two views


def multiview_reference(zs, lam=25.0, mu=25.0, nu=1.0, eps=1e-4):
    """The multi-view terms in float64 loops, from their definitions and not from vicreg.core.loss:
    invariance = the mean over all pairs of views of s(Z_i, Z_j) (per dimension, as the two-view term),
    variance = the mean over views of v(Z), covariance = 2/N times the sum over views of c(Z)."""
    views = [z.double().tolist() for z in zs]
    n_views, n, d = len(views), len(views[0]), len(views[0][0])

    def v(z):
        tot = 0.0
        for j in range(d):
            m = sum(z[i][j] for i in range(n)) / n
            tot += max(0.0, 1.0 - math.sqrt(sum((z[i][j] - m) ** 2 for i in range(n)) / (n - 1) + eps))
        return tot / d

    def c(z):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        return sum((sum((z[i][p] - means[p]) * (z[i][q] - means[q]) for i in range(n)) / (n - 1)) ** 2
                   for p in range(d) for q in range(d) if p != q) / d

    pairs = [(a, b) for a in range(n_views) for b in range(a + 1, n_views)]
    s = sum(sum((views[a][i][j] - views[b][i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
            for a, b in pairs) / len(pairs)
    var = sum(v(z) for z in views) / n_views
    cov = 2 * sum(c(z) for z in views) / n_views
    return lam * s + mu * var + nu * cov, s, var, cov


@pytest.mark.parametrize("n_views,seed,scale", [(2, 0, 1.0), (4, 1, 0.1), (6, 2, 3.0)])
def test_multiview_matches_float64_reference(n_views, seed, scale):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(16, 12, generator=g) * scale
    zs = [base + 0.3 * torch.randn(16, 12, generator=g) for _ in range(n_views)]
    got = multiview_loss(zs, inv_coeff=3.0, var_coeff=7.0, cov_coeff=2.0)
    want = multiview_reference(zs, 3.0, 7.0, 2.0)
    for g_, w in zip(got, want, strict=True):
        assert abs(g_.item() - w) <= 1e-5 * abs(w) + 1e-7, (g_.item(), w)


def test_two_views_give_the_two_view_loss_and_its_reference():
    g = torch.Generator().manual_seed(5)
    z_a, z_b = torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g)
    multi, pair = multiview_loss([z_a, z_b]), vicreg_loss(z_a, z_b)
    for m, p, r in zip(multi, pair, reference(z_a, z_b), strict=True):
        assert m.item() == pytest.approx(p.item(), rel=1e-6) and m.item() == pytest.approx(r, rel=1e-5)


def test_multiview_is_the_two_view_loss_averaged_over_all_pairs():
    g = torch.Generator().manual_seed(6)
    zs = [torch.randn(32, 8, generator=g, dtype=torch.float64) for _ in range(5)]
    pairs = [vicreg_loss(zs[a], zs[b]) for a in range(5) for b in range(a + 1, 5)]
    for k, term in enumerate(multiview_loss(zs)):
        assert term.item() == pytest.approx(sum(p[k].item() for p in pairs) / len(pairs), rel=1e-12)
    assert multiview_invariance(zs).dtype == torch.float64


def test_multiview_terms_and_identical_views():
    z = torch.randn(32, 16)
    t = multiview_loss([z, z.clone(), z.clone()])
    assert t.invariance.item() == pytest.approx(0.0, abs=1e-12)  # (z + z + z) / 3 rounds
    assert t.variance.item() == pytest.approx(multiview_variance([z]).item(), rel=1e-6)
    assert t.covariance.item() == pytest.approx(multiview_covariance([z, z]).item(), rel=1e-6)
    assert t.covariance.item() == pytest.approx(2 * covariance_loss(z).item(), rel=1e-6)


@pytest.mark.parametrize("shapes,msg", [([(8, 4)], "at least 2 views"), ([(8, 4), (8, 4), (8, 5)], "same shape"),
                                        ([(1, 4), (1, 4), (1, 4)], "at least 2")])
def test_multiview_rejects_bad_inputs(shapes, msg):
    with pytest.raises(ValueError, match=msg):
        multiview_loss([torch.randn(*s) for s in shapes])


def test_multiview_gather_gives_variance_and_covariance_over_the_global_batch():
    g = torch.Generator().manual_seed(7)
    zs = [torch.randn(8, 6, generator=g) for _ in range(3)]
    whole = multiview_loss(zs)
    rest = [z[4:] for z in zs]  # rank 1's rows, in the order the loss gathers (view 1, 2, 3)

    def gather(z):
        return torch.cat([z, rest.pop(0)])

    part = multiview_loss([z[:4] for z in zs], gather=gather)
    assert rest == []
    assert part.variance == pytest.approx(whole.variance.item(), rel=1e-6)
    assert part.covariance == pytest.approx(whole.covariance.item(), rel=1e-6)
    assert part.invariance == pytest.approx(multiview_invariance([z[:4] for z in zs]).item(), rel=1e-6)
