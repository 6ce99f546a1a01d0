"""ResNet-18 with the CIFAR stem, and the VICReg expander ("projector")."""
from __future__ import annotations

from torch import Tensor, nn

from .config import ModelConfig
from .fastconv import swap_convs
from .loss import VICRegTerms, multiview_loss, vicreg_loss
from .resnet import ResNet18


def cifar_resnet18(width: int = 64) -> nn.Module:
    """ResNet-18 (torchvision's, vicreg/core/resnet.py) with a 3x3 stride-1 first conv and no max-pool: 32 px images
    keep their 32x32 resolution into layer1 instead of being cut to 8x8. Outputs 8 x `width` features (512 at
    ResNet-18's own width, 64). Its convolutions are vicreg.core.fastconv.Conv2d: the same parameters, with a
    faster weight gradient on small maps on the CPU."""
    net = ResNet18()
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    if width != 64:
        _restage(net, width)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return swap_convs(net)


def _restage(net: nn.Module, width: int) -> None:
    """The four stages at `width`, 2x, 4x, 8x channels, built and initialised as torchvision builds ResNet-18's
    (ResNet-18 itself keeps torchvision's modules untouched, so its weights are seeded exactly as always)."""
    net.bn1 = nn.BatchNorm2d(width)
    net.inplanes = width
    for i in range(4):
        setattr(net, f"layer{i + 1}", net._make_layer(width << i, 2, stride=1 if i == 0 else 2))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def projector(in_dim: int, dims: list[int]) -> nn.Sequential:
    """Linear-BN-ReLU blocks, last layer a plain Linear (as in the official code)."""
    layers: list[nn.Module] = []
    prev = in_dim
    for d in dims[:-1]:
        layers += [nn.Linear(prev, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
        prev = d
    layers.append(nn.Linear(prev, dims[-1], bias=False))
    return nn.Sequential(*layers)


class VICReg(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        self.backbone = cifar_resnet18(cfg.width)
        self.projector = projector(cfg.backbone_dim, cfg.projector_dims())
        # distributed training sets vicreg.core.distributed.full_gather: variance and covariance over the global batch
        self.gather = None

    def embed(self, x: Tensor) -> Tensor:
        """The backbone representation, 8 x width features (what evaluation and the app use)."""
        return self.backbone(x)

    def forward(self, *views: Tensor, loss_kwargs: dict | None = None) -> tuple[VICRegTerms | Tensor, ...]:
        """The loss terms, then each view's embedding (`terms, z_a, z_b = model(x_a, x_b)`)."""
        # Separate passes per view, as in the official code: BatchNorm statistics are then
        # per view, so a view's embedding cannot borrow statistics from its partners.
        zs = [self.projector(self.backbone(x)) for x in views]
        kw = {**(loss_kwargs or {}), "gather": self.gather}
        # two views keep the two-view loss itself (bit for bit what two-view runs always computed)
        terms = vicreg_loss(*zs, **kw) if len(zs) == 2 else multiview_loss(zs, **kw)
        return (terms, *zs)
