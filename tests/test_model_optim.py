import itertools
import math

import pytest
import torch
from torch import nn

from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.core.model import VICReg, cifar_resnet18
from vicreg.core.optim import LARS, lr_at, make_optimizer, param_groups


def test_cifar_stem_and_dimensions():
    net = cifar_resnet18()
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    m = VICReg(ModelConfig(projector="64-64-32"))
    x = torch.randn(4, 3, 32, 32)
    assert m.embed(x).shape == (4, 512)
    terms, z_a, z_b = m(x, x.flip(-1))
    assert z_a.shape == (4, 32) and terms.total.ndim == 0
    # projector: Linear-BN-ReLU, Linear-BN-ReLU, Linear (no bias), official layout
    kinds = [type(layer).__name__ for layer in VICReg().projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [layer.out_features for layer in VICReg().projector if isinstance(layer, nn.Linear)] == [2048, 2048, 2048]


@pytest.mark.parametrize("width", [16, 32])
def test_a_narrower_resnet18_has_the_same_layout_at_a_fraction_of_the_weights(width):
    """ResNet-18's blocks and strides at `width`, 2x, 4x, 8x channels: 8 x width features, and the weights scale
    with width squared (ResNet-18 itself: 11.17 M)."""
    wide, narrow = cifar_resnet18(), cifar_resnet18(width)
    assert [type(m).__name__ for m in narrow.modules()] == [type(m).__name__ for m in wide.modules()]
    strides = [[getattr(m, "stride", None) for m in net.modules()] for net in (narrow, wide)]
    assert strides[0] == strides[1]
    assert [layer[0].conv1.out_channels for layer in (narrow.layer1, narrow.layer2, narrow.layer3, narrow.layer4)] \
        == [width, 2 * width, 4 * width, 8 * width]
    n_wide, n_narrow = (sum(p.numel() for p in net.parameters()) for net in (wide, narrow))
    assert n_wide == 11_168_832 and n_narrow == pytest.approx(n_wide * (width / 64) ** 2, rel=0.01)
    m = VICReg(ModelConfig(projector="64-32", width=width))
    x = torch.randn(4, 3, 16, 16)
    assert m.embed(x).shape == (4, 8 * width) and m(x, x.flip(-1))[1].shape == (4, 32)
    # initialised as torchvision initialises ResNet-18: He-normal (fan-out) convolutions, BatchNorm at 1 and 0
    conv = narrow.layer3[0].conv2.weight
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (conv.shape[0] * 9)), rel=0.05)
    assert all(bool((bn.weight == 1).all() and (bn.bias == 0).all())
               for bn in narrow.modules() if isinstance(bn, nn.BatchNorm2d))


def _torchvision_cifar_resnet18(width: int) -> nn.Module:
    """The backbone as it was built on torchvision's ResNet-18 (before vicreg/core/resnet.py), fastconv aside."""
    from torchvision.models import resnet18
    from torchvision.models.resnet import BasicBlock

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    if width != 64:
        net.bn1, net.inplanes = nn.BatchNorm2d(width), width
        for i in range(4):
            setattr(net, f"layer{i + 1}", net._make_layer(BasicBlock, width << i, 2, stride=1 if i == 0 else 2))
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    return net


@pytest.mark.parametrize("width", [64, 16])
def test_the_backbone_equals_torchvisions_resnet18_weight_for_weight(width):
    """The same seed gives the same tensors under the same names as torchvision's ResNet-18 did, and the same
    features: checkpoints keep loading and seeded runs keep their figures."""
    torch.manual_seed(7)
    ours = cifar_resnet18(width)
    after_ours = torch.rand(3)
    torch.manual_seed(7)
    theirs = _torchvision_cifar_resnet18(width)
    assert torch.equal(after_ours, torch.rand(3))  # both drew the same numbers from the generator
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and len(a) == 120
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    x = torch.randn(4, 3, 16, 16)
    ours.train(), theirs.train()
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    ours.eval(), theirs.eval()
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_the_engine_imports_no_torchvision():
    """torchvision.models brings torch._dynamo with it, about a second of start-up for every process that embeds."""
    import subprocess
    import sys

    code = "import sys, vicreg.core.model, vicreg.training.evaluate; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bad_projector_spec():
    with pytest.raises(ValueError, match="projector"):
        ModelConfig(projector="2048-x").projector_dims()


def test_param_groups_exclude_biases_and_norms():
    m = VICReg(ModelConfig(projector="16-16"))
    decay, keep = param_groups(m, 1e-4)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in keep["params"])
    assert keep["weight_decay"] == 0.0 and keep["exclude"] and not decay["exclude"]
    n = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for g in (decay, keep) for p in g["params"]) == n


def test_lars_step_matches_hand_computation():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "exclude": False},
                {"params": [b], "weight_decay": 0.0, "exclude": True}], lr=0.5, momentum=0.9, eta=0.02)
    w.grad = torch.tensor([[0.0, 1.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    d = torch.tensor([[0.0, 1.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])  # grad + wd * w
    q = 0.02 * 5.0 / d.norm()
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.5 * q * d, atol=1e-6)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))  # plain SGD, no wd, no trust ratio


def test_lars_momentum_matches_hand_computation():
    # no weight decay, so only the momentum buffer can carry the first step into the second
    w0, b0 = torch.tensor([[3.0, 4.0]]), torch.tensor([1.0])
    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    lr, m, eta = 0.5, 0.9, 0.02
    opt = LARS([{"params": [w], "weight_decay": 0.0, "exclude": False},
                {"params": [b], "weight_decay": 0.0, "exclude": True}], lr=lr, momentum=m, eta=eta)
    g1, g2 = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, -1.0]])
    w.grad, b.grad = g1.clone(), torch.tensor([2.0])
    opt.step()
    mu_w = g1 * (eta * w0.norm() / g1.norm())  # trust-ratio-scaled gradient
    w1 = w0 - lr * mu_w
    assert torch.allclose(w.detach(), w1, atol=1e-7)
    w.grad, b.grad = g2.clone(), torch.zeros(1)
    opt.step()
    mu_w = m * mu_w + g2 * (eta * w1.norm() / g2.norm())
    assert torch.allclose(w.detach(), w1 - lr * mu_w, atol=1e-7)
    # the bias got no gradient in step 2: it moves by lr * momentum * its first gradient
    assert torch.allclose(b.detach(), b0 - lr * 2.0 - lr * m * 2.0, atol=1e-7)
    assert torch.allclose(opt.state[b]["mu"], torch.tensor([m * 2.0]))


def test_schedule_warmup_then_cosine():
    peak, total, warm = 1.0, 100, 10
    assert lr_at(0, total, warm, peak, 0.001) == pytest.approx(0.1)
    assert lr_at(9, total, warm, peak, 0.001) == pytest.approx(1.0)
    assert lr_at(10, total, warm, peak, 0.001) == pytest.approx(1.0)
    assert lr_at(55, total, warm, peak, 0.001) == pytest.approx(0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, total, warm, peak, 0.001) == pytest.approx(0.001)
    lrs = [lr_at(s, total, warm, peak, 0.001) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_lr_scales_with_batch_and_adamw_option():
    cfg = TrainConfig(batch_size=512, optimizer="adamw", lr=1e-3)
    assert cfg.scaled_lr() == pytest.approx(2e-3)
    opt = make_optimizer(VICReg(ModelConfig(projector="8-8")), cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd").validate()
