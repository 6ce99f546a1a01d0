"""BatchNorm folded into the convolution before it, for feature extraction.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so conv -> BN equals one conv with
scaled weights and a bias. Extraction then skips a full read and write of every activation per BN
(20 of them in ResNet-18), which is memory-bound work that takes a large share of a CPU's forward
pass. The folded copy never touches the model being trained, and its features equal the unfolded
model's up to float rounding. Every extraction path (one uploaded image, a batch, the kNN monitor)
uses it, so an image embeds the same alone as in a batch. It is kept per backbone and rebuilt when any
of the backbone's tensors has changed since (an optimiser step, a loaded state dict).
"""
from __future__ import annotations

import copy
import threading
import weakref

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))  # ResNet blocks and stem (vicreg/core/resnet.py)


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(parent, bn_name, nn.Identity())


_cache: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _signature(module: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (tensors count their writes)."""
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))


def folded(backbone: nn.Module) -> nn.Module:
    """The backbone in eval mode with every conv -> BatchNorm pair folded into one conv (a cached copy)."""
    sig = _signature(backbone)
    with _lock:
        hit = _cache.get(backbone)
    if hit is not None and hit[0] == sig:
        return hit[1]
    net = fold(backbone)
    with _lock:
        _cache[backbone] = (sig, net)
    return net


def fold(backbone: nn.Module) -> nn.Module:
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
