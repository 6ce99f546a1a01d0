"""LARS (as in the official VICReg code), the AdamW option, and the warm-up + cosine schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step per weight matrix is scaled by eta * ||w|| / ||g + wd*w||.

    Param groups flagged `exclude=True` (biases and norm parameters) get neither weight decay nor
    the trust-ratio scaling, as in the official implementation. A step consumes the gradients: it scales them
    in place (set them anew, or to None, before the next step, as the training loop does).
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # torch's optimiser contract: re-evaluate the loss first
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            # the gradients are updated in place: the step is their last reader (the loop sets them to None
            # next), and in place spares a fresh copy of every weight's size per operation (memory-bound here)
            grads = [p.grad for p in params]
            if not g["exclude"]:
                torch._foreach_add_(grads, params, alpha=g["weight_decay"])
                p_norm = torch._foreach_norm(params)
                g_norm = torch._foreach_norm(grads)
                # trust ratio, 1 where either norm is zero (fresh zero-init layers, dead grads)
                q = [
                    torch.where((pn > 0) & (gn > 0), g["eta"] * pn / gn, torch.ones_like(pn))
                    for pn, gn in zip(p_norm, g_norm, strict=True)
                ]
                torch._foreach_mul_(grads, q)
            bufs = []
            for p in params:
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                bufs.append(state["mu"])
            torch._foreach_mul_(bufs, g["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-g["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights (ndim > 1) decay and adapt; biases and norm parameters (ndim == 1) do neither."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    keep = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay, "exclude": False},
        {"params": keep, "weight_decay": 0.0, "exclude": True},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.wd())
    lr = cfg.scaled_lr()
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, weight_decay=cfg.wd(), momentum=cfg.momentum, eta=cfg.lars_eta)
    for gr in groups:
        gr.pop("exclude")
    kw = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.wd(), **kw)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to peak * min_ratio (a pure function of step,
    so resuming needs only the step count)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    end = peak * min_ratio
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr
