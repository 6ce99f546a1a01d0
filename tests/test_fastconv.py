"""vicreg.core.fastconv: the small-map products (forward, input and weight gradients) equal the convolution's
own, and a training step with them equals the reference step (plain nn.Conv2d everywhere) up to bf16
rounding."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vicreg.core import fastconv
from vicreg.core.config import TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.runtime import make_runtime

SHAPES = [  # (in, out, kernel, stride, input side): layer4's convs at 32 px and 24 px views, and 1x1 downsamples
    (512, 512, 3, 1, 4), (256, 512, 3, 2, 8), (256, 512, 1, 2, 8), (512, 512, 3, 1, 3), (256, 512, 3, 2, 6),
    (16, 8, 3, 1, 2),
]


def _pair(ci, co, k, s, dtype=torch.float64):
    torch.manual_seed(0)
    ref = nn.Conv2d(ci, co, k, s, k // 2, bias=False).to(dtype)
    fast = nn.Conv2d(ci, co, k, s, k // 2, bias=False).to(dtype)
    fast.load_state_dict(ref.state_dict())
    fastconv.swap_convs(fast)
    return ref, fast


@pytest.mark.parametrize("ci,co,k,s,side", SHAPES)
def test_weight_gradient_equals_the_convolution_in_float64(ci, co, k, s, side):
    ref, fast = _pair(ci, co, k, s)
    assert type(fast) is fastconv.Conv2d
    x = torch.randn(6, ci, side, side, dtype=torch.float64)
    grads = []
    for m in (ref, fast):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y))
        grads.append((y.detach(), xi.grad, m.weight.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_channels_last_bf16_autocast_within_rounding():
    ref, fast = _pair(256, 512, 3, 1, torch.float32)
    ref, fast = (m.to(memory_format=torch.channels_last) for m in (ref, fast))
    x = torch.randn(32, 256, 4, 4).contiguous(memory_format=torch.channels_last)
    w_grads = []
    for m in (ref, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x.requires_grad_())
        assert y.dtype == torch.bfloat16
        y.float().square().mean().backward()
        assert m.weight.grad.dtype == torch.float32  # autocast's cast still carries the gradient back
        w_grads.append(m.weight.grad)
    rel = (w_grads[0] - w_grads[1]).abs().max() / w_grads[0].abs().max()
    assert 0 < rel < 2e-2  # differs (another summation order), but only at bf16's 8-bit mantissa


def test_large_maps_and_inference_take_the_plain_path():
    ref, fast = _pair(8, 8, 3, 1, torch.float32)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    assert fast(x).grad_fn.name() == ref(x).grad_fn.name() == "ConvolutionBackward0"
    small = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert fast(small).grad_fn.name() != "ConvolutionBackward0"
    with torch.no_grad():
        torch.testing.assert_close(fast(small), ref(small), rtol=0, atol=0)


def test_model_uses_it_with_unchanged_state_dict_keys():
    model = VICReg()
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is fastconv.Conv2d for m in convs)
    plain = VICReg()
    for m in plain.backbone.modules():
        if type(m) is fastconv.Conv2d:
            m.__class__ = nn.Conv2d
    assert list(model.state_dict()) == list(plain.state_dict())


def _step_grads(model, v_a, v_b, rt):
    with rt.autocast():
        terms, _, _ = model(rt.prepare(v_a), rt.prepare(v_b))
    model.zero_grad(set_to_none=True)
    terms.total.backward()
    return terms, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_training_step_equals_the_reference_step_within_bf16():
    """Both bf16 steps differ from the fp32 step by bf16 rounding, amplified through 20 layers (on this
    small random batch by up to half a gradient's norm for some BatchNorm parameters). The products
    must add nothing to that: per parameter, fastconv's distance to fp32 stays within 1.25x the plain
    convolutions' distance."""
    rt, rt32 = make_runtime("cpu", "bf16", channels_last=True), make_runtime("cpu", "fp32", channels_last=True)
    cfg = TrainConfig()
    torch.manual_seed(0)
    fast = VICReg(cfg.model).to(memory_format=torch.channels_last)
    ref = VICReg(cfg.model).to(memory_format=torch.channels_last)
    ref.load_state_dict(fast.state_dict())
    for m in ref.modules():
        if type(m) is fastconv.Conv2d:
            m.__class__ = nn.Conv2d
    g = torch.Generator().manual_seed(1)
    v_a, v_b = torch.randn(16, 3, 32, 32, generator=g), torch.randn(16, 3, 32, 32, generator=g)
    t_fast, g_fast = _step_grads(fast, v_a, v_b, rt)
    t_ref, g_ref = _step_grads(ref, v_a, v_b, rt)
    _, g_32 = _step_grads(ref, v_a, v_b, rt32)
    # layer4's forward is a matrix product too: the same sums in another order, so equal up to bf16 rounding
    # (on some CPUs exactly equal), and the product is what ran
    out = fast.backbone.layer4[1].conv2(torch.randn(2, 512, 4, 4, requires_grad=True))
    assert out.grad_fn.name() != "ConvolutionBackward0"
    torch.testing.assert_close(t_fast.total, t_ref.total, rtol=2e-3, atol=0)
    layer4 = [n for n in g_ref if n.startswith("backbone.layer4") and n.endswith("conv2.weight")]
    assert layer4

    def dist(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()

    for name in g_32:
        fast_err, ref_err = dist(g_fast[name], g_32[name]), dist(g_ref[name], g_32[name])
        assert fast_err <= 1.25 * ref_err + 1e-3, f"{name}: {fast_err:.3g} from fp32 against {ref_err:.3g}"


def test_folded_backbone_equals_the_model_in_eval_mode():
    from vicreg.core.fold import folded
    from vicreg.training.evaluate import extract_features

    torch.manual_seed(0)
    backbone = VICReg().backbone
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            backbone(torch.randn(32, 3, 32, 32) * 2 + 0.5)
    net = folded(backbone)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert backbone.training and folded(backbone) is net  # the original is untouched; the copy is kept
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), backbone.eval()(x), rtol=1e-4, atol=1e-4)
        backbone.layer4[1].bn2.running_mean += 1.0  # any change to the backbone rebuilds the copy
        again = folded(backbone)
        assert again is not net
        torch.testing.assert_close(again(x), backbone(x), rtol=1e-4, atol=1e-4)
    rt = make_runtime("cpu", "bf16", channels_last=True)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    batch = extract_features(backbone, images, rt)
    alone = torch.cat([extract_features(backbone, images[i:i + 1], rt) for i in (0, 17, 39)])
    torch.testing.assert_close(alone, batch[[0, 17, 39]], rtol=1e-3, atol=1e-3)  # an image embeds the same alone
