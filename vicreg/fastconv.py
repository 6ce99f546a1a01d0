"""A Conv2d whose weight gradient on small feature maps is one matrix product (CPU only).

Why: on CPUs with AMX, oneDNN's backward-weights convolution (brgconv_bwd_w) is slow when the
output map is tiny. ResNet-18's layer4 works on 4x4 maps (3x3 with 24-px views), where the weight
gradient of a 512->512 3x3 conv took 3x the time of its forward pass and was the largest single item
of a training step (docs/benchmarks.md has the per-layer table). There the weight gradient is exactly
    dW[o, c, i, j] = sum over (n, y, x) of dY[n, o, y, x] * Xpad[n, c, s*y + i, s*x + j],
a [out, N*H*W] x [N*H*W, in*k*k] matrix product over the batch's patches. The patches of a 4x4 map
are small (128 x 16 positions x 4,608 values in bf16 = 19 MB), and AMX runs the product near its
matmul peak. On larger maps the patch matrix grows with H*W and oneDNN's own kernel wins, so the
rule below only takes maps of at most SMALL_MAP positions per side.

On CUDA (and when no gradient is needed) this is a plain Conv2d: nothing changes on the GPU path.
The module keeps Conv2d's parameters and state-dict keys, so checkpoints are unaffected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SMALL_MAP = 4  # output side at or below which the matrix product beats oneDNN's kernel (AMX and AVX-512)


def _patches(x: Tensor, k: int, stride: int, pad: int, ho: int, wo: int) -> Tensor:
    """[N, ho, wo, k*k*C]: every output position's input window, channels last, (i, j, c) order."""
    xp = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    return torch.cat([xp[:, i:i + span_h:stride, j:j + span_w:stride, :] for i in range(k) for j in range(k)], dim=3)


def weight_grad(grad_out: Tensor, x: Tensor, weight_shape: torch.Size, stride: int, pad: int) -> Tensor:
    """The weight gradient of a square, ungrouped, undilated conv, as one matrix product."""
    co, ci, k, _ = weight_shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    cols = _patches(x, k, stride, pad, ho, wo).reshape(-1, k * k * ci)
    g = grad_out.permute(0, 2, 3, 1).reshape(-1, co)
    return (g.t() @ cols).view(co, k, k, ci).permute(0, 3, 1, 2)


class _SmallMapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, stride: int, pad: int) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.conv = (stride, pad)
        return F.conv2d(x, w, None, stride, pad)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, w = ctx.saved_tensors
        stride, pad = ctx.conv
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:  # the input gradient stays oneDNN's (it is as fast as the forward)
            grad_in = torch.ops.aten.convolution_backward(grad_out, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False,
                                                          [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(grad_out, x, w.shape, stride, pad)
        return grad_in, grad_w, None, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d (no bias, no groups, no dilation, square) with the small-map weight gradient on the CPU."""

    def forward(self, x: Tensor) -> Tensor:
        s, p = self.stride[0], self.padding[0]
        if x.device.type != "cpu" or not torch.is_grad_enabled() or not self.weight.requires_grad:
            return super().forward(x)
        out_side = (x.shape[-1] + 2 * p - self.kernel_size[0]) // s + 1
        if out_side > SMALL_MAP:
            return super().forward(x)
        w = self.weight
        if torch.is_autocast_enabled("cpu"):  # autocast's own cast, outside the Function so its gradient flows back
            w = w.to(torch.get_autocast_dtype("cpu"))
            x = x.to(w.dtype)
        return _SmallMapConv.apply(x, w, s, p)


def swap_convs(module: nn.Module) -> nn.Module:
    """Turn every plain square, ungrouped, undilated, bias-free nn.Conv2d under `module` into Conv2d
    above, in place (same parameters and state-dict keys)."""
    for m in module.modules():
        if (type(m) is nn.Conv2d and m.bias is None and m.groups == 1 and m.dilation == (1, 1)
                and m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
                and m.padding[0] == m.padding[1] and m.padding_mode == "zeros"):
            m.__class__ = Conv2d
    return module
