import pytest
import torch
import torchvision.transforms.v2.functional as TF

from vicreg.core.augment import AugParams, adjust_hue, apply_params, augment, normalize, sample_params, two_views
from vicreg.core.config import AugmentConfig

CFG = AugmentConfig()


def _params(n=512, seed=0):
    return sample_params(n, CFG, torch.Generator().manual_seed(seed))


def test_parameters_lie_in_their_ranges():
    p = _params()
    x0, y0, w, h = p.crop.unbind(1)
    area, ratio = w * h, w / h
    assert ((area >= 0.2 - 1e-6) & (area <= 1 + 1e-6)).all()
    assert ((ratio >= 3 / 4 - 1e-5) & (ratio <= 4 / 3 + 1e-5)).all()
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    assert ((p.brightness >= 0.6) & (p.brightness <= 1.4)).all()
    assert ((p.contrast >= 0.6) & (p.contrast <= 1.4)).all()
    assert ((p.saturation >= 0.8) & (p.saturation <= 1.2)).all()
    assert ((p.hue >= -0.1) & (p.hue <= 0.1)).all()
    assert (p.order.sort(1).values == torch.arange(4)).all()  # each row a permutation


def test_probabilities_match_the_config():
    p = _params(20000)
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert p.jitter.float().mean().item() == pytest.approx(0.8, abs=0.02)
    assert p.gray.float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert p.solarize.float().mean().item() == pytest.approx(0.1, abs=0.02)


def test_every_sample_draws_its_own_parameters():
    p = _params(256)
    assert p.crop.unique(dim=0).shape[0] == 256
    assert p.brightness.unique().numel() == 256
    assert p.order.unique(dim=0).shape[0] > 12  # many of the 24 orders appear


def test_fixed_seed_reproduces_and_other_seed_differs():
    a, b, c = _params(seed=3), _params(seed=3), _params(seed=4)
    assert torch.equal(a.crop, b.crop) and torch.equal(a.order, b.order) and torch.equal(a.hue, b.hue)
    assert not torch.equal(a.crop, c.crop)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    v1, _ = augment(x, CFG, torch.Generator().manual_seed(7))
    v2, _ = augment(x, CFG, torch.Generator().manual_seed(7))
    assert torch.equal(v1, v2)


def test_output_stays_in_pixel_range_and_shape():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    v, _ = augment(x, CFG, torch.Generator().manual_seed(0))
    assert v.shape == (64, 3, 32, 32) and v.dtype == torch.float32
    assert v.min().item() >= 0.0 and v.max().item() <= 1.0
    a, b = two_views(x, CFG, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)  # the two views differ


def _identity(n):
    z = torch.zeros(n, dtype=torch.bool)
    return AugParams(
        crop=torch.tensor([[0.0, 0.0, 1.0, 1.0]] * n), flip=z.clone(), jitter=z.clone(),
        brightness=torch.ones(n), contrast=torch.ones(n), saturation=torch.ones(n), hue=torch.zeros(n),
        order=torch.arange(4).repeat(n, 1), gray=z.clone(), solarize=z.clone(),
    )


def test_identity_parameters_return_the_image_and_each_op_does_its_job():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    xf = x.float() / 255
    p = _identity(4)
    assert torch.allclose(apply_params(x, p, 32), xf, atol=1e-5)
    p.flip[:] = True
    assert torch.allclose(apply_params(x, p, 32), xf.flip(-1), atol=1e-5)
    p = _identity(4)
    p.gray[:] = True
    g = apply_params(x, p, 32)
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
    assert torch.allclose(g, TF.rgb_to_grayscale(xf, 3), atol=1e-5)
    p = _identity(4)
    p.solarize[:] = True
    assert torch.allclose(apply_params(x, p, 32), torch.where(xf >= 0.5, 1 - xf, xf), atol=1e-5)
    # a crop of the top-left quarter equals torchvision's crop + bilinear upscaling of that quarter
    p = _identity(4)
    p.crop[:] = torch.tensor([0.0, 0.0, 0.5, 0.5])
    # (away from the crop's far edge, where we sample the real neighbour pixel instead of clamping)
    want = TF.resize(xf[:, :, :16, :16], [32, 32], antialias=False)
    assert torch.allclose(apply_params(x, p, 32)[..., :-1, :-1], want[..., :-1, :-1], atol=1e-4)


@pytest.mark.parametrize("op,factor,tv", [
    ("brightness", 1.3, TF.adjust_brightness), ("contrast", 0.7, TF.adjust_contrast),
    ("saturation", 1.2, TF.adjust_saturation), ("hue", -0.08, TF.adjust_hue),
])
def test_jitter_ops_match_torchvision(op, factor, tv):
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    p = _identity(4)
    p.jitter[:] = True
    getattr(p, op)[:] = factor
    assert torch.allclose(apply_params(x, p, 32), tv(x.float() / 255, factor), atol=1e-5)


def test_hue_shift_per_sample():
    x = torch.rand(3, 3, 8, 8)
    shifts = torch.tensor([0.0, 0.05, -0.1])
    out = adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        assert torch.allclose(out[i], TF.adjust_hue(x[i], s), atol=1e-5)


def test_single_image_and_describe():
    img = torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8)  # any size in, 32x32 out
    v, p = augment(img, CFG, torch.Generator().manual_seed(1))
    assert v.shape == (1, 3, 32, 32)
    d = p.describe(0)
    assert set(d) >= {"crop_xywh", "flip", "jitter_order", "grayscale", "solarize"}
    assert 0.2 - 1e-3 <= d["crop_area"] <= 1.0


def test_normalize_uses_config_stats():
    x = torch.full((1, 3, 2, 2), 0.5)
    n = normalize(x, CFG)
    assert n[0, 0, 0, 0].item() == pytest.approx((0.5 - CFG.mean[0]) / CFG.std[0], rel=1e-6)
