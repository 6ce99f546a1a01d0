"""BatchNorm folded into the convolution before it, for feature extraction.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so conv -> BN equals one conv with
scaled weights and a bias. Extraction then skips a full read and write of every activation per BN
(20 of them in ResNet-18), which is memory-bound work that takes a large share of a CPU's forward
pass. The folded copy is built per extraction call (a few milliseconds for ResNet-18) and never
touches the model being trained. Its features equal the unfolded model's up to float rounding.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))  # torchvision ResNet blocks and stem


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(parent, bn_name, nn.Identity())


def folded(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy of a ResNet backbone with every conv -> BatchNorm pair folded into one conv."""
    net = copy.deepcopy(backbone).eval()
    for module in list(net.modules()):
        for conv_name, bn_name in PAIRS:
            _fold_pair(module, conv_name, bn_name)
        if isinstance(module, nn.Sequential) and len(module) == 2:  # a block's downsample: conv, BN
            conv, bn = module[0], module[1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module[0], module[1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return net
