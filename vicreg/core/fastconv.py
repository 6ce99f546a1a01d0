"""A Conv2d that runs as matrix products on small feature maps when training on the CPU.

Why: on CPUs with AMX, oneDNN's convolution kernels are slow when the output map is tiny. ResNet-18's
layer4 works on 4x4 maps (3x3 with 24-px views). There a 512->512 3x3 conv ran its forward at 730
GFLOP/s against about 2,000 on layer1's 32x32 maps, its input gradient as slowly, and its weight
gradient (brgconv_bwd_w) took 3x its forward: layer4 was the largest single item of a training step
(docs/benchmarks.md has the per-layer table). With P the batch's patches, [N*H*W, k*k*in]:
    forward          Y  = P @ W^T                          ([N*H*W, out])
    input gradient   dX = fold(dY @ W)                     (each patch's gradient added back in place)
    weight gradient  dW = dY^T @ P                         ([out, k*k*in])
The patches of a 4x4 map are small (128 x 16 positions x 4,608 values in bf16 = 19 MB), AMX runs
these products near its matmul peak, and the forward keeps P for the weight gradient. On larger maps
the patch matrix grows with H*W and oneDNN's own kernels win, so the rule below only takes maps of at
most SMALL_MAP positions per side (1x1 downsamples keep oneDNN's forward and input gradient, which
are fast already; only their weight gradient is a product).

On CUDA, and when no gradient is needed (feature extraction), this is a plain Conv2d: nothing changes
on the GPU path or in evaluation. The module keeps Conv2d's parameters and state-dict keys, so
checkpoints are unaffected.
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


def _as_matrix(w: Tensor) -> Tensor:
    """[out, k*k*in], in the patches' (i, j, c) order."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def weight_grad(grad_out: Tensor, x: Tensor, weight_shape: torch.Size, stride: int, pad: int,
                cols: Tensor | None = None) -> Tensor:
    """The weight gradient of a square, ungrouped, undilated conv, as one matrix product."""
    co, ci, k, _ = weight_shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    if cols is None:
        cols = _patches(x, k, stride, pad, ho, wo).reshape(-1, k * k * ci)
    g = grad_out.permute(0, 2, 3, 1).reshape(-1, co)
    return (g.t() @ cols).view(co, k, k, ci).permute(0, 3, 1, 2)


def input_grad(grad_out: Tensor, w: Tensor, x_shape: torch.Size, stride: int, pad: int) -> Tensor:
    """The input gradient as one product, each patch's share added back where it came from (in fp32,
    so that nine bf16 additions per pixel do not round nine times)."""
    co, ci, k, _ = w.shape
    n, _, h, wd = x_shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    dcols = (grad_out.permute(0, 2, 3, 1).reshape(-1, co) @ _as_matrix(w)).view(n, ho, wo, k, k, ci)
    acc_dtype = torch.promote_types(grad_out.dtype, torch.float32)
    acc = torch.zeros(n, h + 2 * pad + stride, wd + 2 * pad + stride, ci, dtype=acc_dtype, device=w.device)
    span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    for i in range(k):
        for j in range(k):
            acc[:, i:i + span_h:stride, j:j + span_w:stride, :] += dcols[:, :, :, i, j, :]
    return acc[:, pad:pad + h, pad:pad + wd, :].to(grad_out.dtype).permute(0, 3, 1, 2)


def _product(x: Tensor, w: Tensor, stride: int, pad: int) -> tuple[Tensor, Tensor]:
    """The convolution as patches @ weights, channels-last out; and the patches (kept for the weight gradient)."""
    co, ci, k, _ = w.shape
    n, side = x.shape[0], (x.shape[-1] + 2 * pad - k) // stride + 1
    cols = _patches(x, k, stride, pad, side, side).reshape(-1, k * k * ci)
    return (cols @ _as_matrix(w).t()).view(n, side, side, co).permute(0, 3, 1, 2), cols


class _SmallMapConv(torch.autograd.Function):
    """3x3 (and larger) kernels: forward, input gradient and weight gradient as matrix products."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, stride: int, pad: int) -> Tensor:
        out, cols = _product(x, w, stride, pad)
        ctx.save_for_backward(cols, w)
        ctx.conv = (stride, pad, x.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        cols, w = ctx.saved_tensors
        stride, pad, x_shape = ctx.conv
        grad_in = input_grad(grad_out, w, x_shape, stride, pad) if ctx.needs_input_grad[0] else None
        grad_w = weight_grad(grad_out, None, w.shape, stride, pad, cols) if ctx.needs_input_grad[1] else None
        return grad_in, grad_w, None, None


class _SmallMapPointwise(torch.autograd.Function):
    """1x1 kernels: oneDNN's forward and input gradient, the weight gradient as a matrix product."""

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
        if ctx.needs_input_grad[0]:
            grad_in = torch.ops.aten.convolution_backward(grad_out, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False,
                                                          [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(grad_out, x, w.shape, stride, pad)
        return grad_in, grad_w, None, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d (no bias, no groups, no dilation, square) with the small-map products on the CPU."""

    def forward(self, x: Tensor) -> Tensor:
        s, p, k = self.stride[0], self.padding[0], self.kernel_size[0]
        if x.device.type != "cpu" or not torch.is_grad_enabled() or not self.weight.requires_grad:
            return super().forward(x)  # extraction too: at its batch of 512, oneDNN's forward is as fast (measured)
        if (x.shape[-1] + 2 * p - k) // s + 1 > SMALL_MAP:
            return super().forward(x)
        w = self.weight
        if torch.is_autocast_enabled("cpu"):  # autocast's own cast, outside the Function so its gradient flows back
            w = w.to(torch.get_autocast_dtype("cpu"))
            x = x.to(w.dtype)
        fn = _SmallMapConv if k > 1 else _SmallMapPointwise
        return fn.apply(x, w, s, p)


def swap_convs(module: nn.Module) -> nn.Module:
    """Turn every plain square, ungrouped, undilated, bias-free nn.Conv2d under `module` into Conv2d
    above, in place (same parameters and state-dict keys)."""
    for m in module.modules():
        if (type(m) is nn.Conv2d and m.bias is None and m.groups == 1 and m.dilation == (1, 1)
                and m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
                and m.padding[0] == m.padding[1] and m.padding_mode == "zeros"):
            m.__class__ = Conv2d
    return module
