"""Frozen-backbone evaluation: features extracted once, then weighted kNN and a linear probe."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.augment import normalize
from ..core.config import AugmentConfig
from ..core.fold import folded
from ..core.runtime import Runtime
from ..runfiles.progress import Progress
from ..runfiles.report import EvalReport


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    images: Tensor,
    rt: Runtime,
    aug: AugmentConfig | None = None,
    batch_size: int = 512,
    progress: Progress | None = None,
    desc: str = "features",
) -> Tensor:
    """(N, 3, 32, 32) uint8 -> (N, D) float32 features on the CPU; no augmentation, eval-mode BN."""
    aug = aug or AugmentConfig()
    was_training = backbone.training
    backbone.eval()
    net = folded(backbone)  # BatchNorm folded into the convs: vicreg/core/fold.py says why
    out = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(rt.device, non_blocking=True)
            x = rt.prepare(normalize(x.float() / 255.0, aug))
            with rt.autocast():
                out.append(net(x).float().cpu())
            if progress:
                progress(min(1.0, (i + batch_size) / images.shape[0]), desc)
    finally:
        backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


# Explore's class guess for one image (services/features/neighbours.py) and the training monitor that measures it
# (vicreg/training/watch.py): the 20 nearest bank images vote (class_votes), each with weight exp(similarity / 0.1).
GUESS_K = 20
GUESS_T = 0.1


def class_votes(top_sim: Tensor, top_labels: Tensor, num_classes: int, temperature: float = GUESS_T,
                relative: bool = False) -> Tensor:
    """The weighted kNN vote (Wu et al. 2018), the one rule behind every kNN figure here (the evaluation's, the
    training monitors', Explore's guess): each query's nearest neighbours, their similarities (Q, k) and labels
    (Q, k), vote exp(sim / T) for their classes. Returns (Q, C) class scores. `relative` weighs exp((sim - best)
    / T) instead: the same vote divided by the best neighbour's weight, which cannot overflow."""
    if relative:
        top_sim = top_sim - top_sim.amax(1, keepdim=True)
    w = (top_sim / temperature).exp()
    votes = torch.zeros(top_sim.shape[0], num_classes, dtype=w.dtype)
    votes.scatter_add_(1, top_labels, w)
    return votes


def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Weighted kNN on cosine similarity: the k nearest bank images' votes (class_votes). Returns (Q, C) class
    scores."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for i in range(0, queries.shape[0], chunk):
        top_sim, top_idx = (queries[i : i + chunk] @ bank.T).topk(k, dim=1)
        scores.append(class_votes(top_sim, bank_labels[top_idx], num_classes, temperature))
    return torch.cat(scores)


def leave_one_out_guess(features: Tensor, labels: Tensor, num_classes: int, k: int = GUESS_K,
                        temperature: float = GUESS_T, chunk: int = 1024) -> float:
    """The share of a labelled set's images whose guess is right when the rest of the set is the bank: what
    Explore answers for one of its bank images (it leaves that image out), for every image of the set."""
    feats = F.normalize(features.float(), dim=1)
    n = feats.shape[0]
    k = min(k, n - 1)
    right = 0
    for i in range(0, n, chunk):
        sim = feats[i : i + chunk] @ feats.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + i] = -float("inf")  # the image itself is not its own neighbour
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = class_votes(top_sim, labels[top_idx], num_classes, temperature, relative=True)  # as Explore's
        right += int((votes.argmax(1) == labels[i : i + chunk]).sum())
    return right / max(n, 1)


def knn_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature).argmax(1)
    return (pred == labels).float().mean().item()


@dataclass
class ProbeResult:
    top1: float
    per_class: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    train_top1: float


def _confusion(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def linear_probe(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    batch_size: int = 1024,
    seed: int = 0,
    progress: Progress | None = None,
) -> ProbeResult:
    """Linear classifier on cached, standardised features (AdamW, cosine lr): minutes of CPU work
    become seconds because the backbone never runs inside the probe's epochs."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    xtr, xte = (train_f - mean) / std, (test_f - mean) / std
    clf = nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((xtr.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for ep in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=g)
        for i in range(0, xtr.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(clf(xtr[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress and (ep % 10 == 9 or ep == epochs - 1):
            progress((ep + 1) / epochs, f"linear probe epoch {ep + 1}/{epochs}")
    with torch.no_grad():
        pred = clf(xte).argmax(1)
        train_top1 = (clf(xtr).argmax(1) == train_y).float().mean().item()
    conf = _confusion(pred, test_y, num_classes)
    per_class = (conf.diag().float() / conf.sum(1).clamp_min(1).float()).tolist()
    return ProbeResult(
        top1=(pred == test_y).float().mean().item(),
        per_class=per_class,
        confusion=conf.tolist(),
        train_top1=train_top1,
    )


def evaluate_backbone(
    backbone: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    classes: list[str],
    rt: Runtime,
    aug: AugmentConfig | None = None,
    probe_epochs: int = 100,
    k: int = 200,
    temperature: float = 0.1,
    progress: Progress | None = None,
) -> EvalReport:
    """Extract features once, then kNN and the linear probe on them (progress: extraction to 0.65)."""
    t0 = time.perf_counter()
    n_tr = train_images.shape[0]

    def sub(lo: float, hi: float):
        return (lambda f, d: progress(lo + (hi - lo) * f, d)) if progress else None

    split = 0.65 * n_tr / (n_tr + test_images.shape[0])  # extraction progress is shared by image count
    tr = extract_features(backbone, train_images, rt, aug, progress=sub(0.0, split), desc="train features")
    te = extract_features(backbone, test_images, rt, aug, progress=sub(split, 0.65), desc="test features")
    knn = knn_accuracy(tr, train_labels, te, test_labels, len(classes), k, temperature)
    if progress:
        progress(0.7, f"kNN top-1 {knn:.1%}")
    probe = linear_probe(tr, train_labels, te, test_labels, len(classes), epochs=probe_epochs, progress=sub(0.7, 1.0))
    return EvalReport(probe.top1, knn, probe.train_top1, probe.per_class, probe.confusion, list(classes), n_tr,
                      test_images.shape[0], probe_epochs, time.perf_counter() - t0)
