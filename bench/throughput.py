"""Throughput benchmark (not a test): this package's pipeline beside the original tool's, in one run.

    python bench/throughput.py [--data PATH] [--batch_size 128] [--steps 6] [--compile] [--json out.json]

Run it as a script from anywhere once the project is installed (requirements-dev.txt installs it
editable, as the README's test command does).

The original-style pipeline is per-image PIL transforms in a DataLoader (2 workers) feeding an
fp32 NCHW model step. Ours is the whole dataset as a uint8 tensor, batched augmentation on the
device and a bf16-autocast channels-last step (where supported). Every figure is measured in this
run, and ratios compare figures from this run only: the host is shared and noisy. Nothing here
asserts a time; it prints what it measured.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from vicreg.core.augment import two_views
from vicreg.core.config import TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.optim import make_optimizer
from vicreg.core.runtime import cpu_kind, make_runtime
from vicreg.core.storage import default_data_root
from vicreg.training.data import load_dataset
from vicreg.training.evaluate import extract_features
from vicreg.training.train import train


def _sync() -> None:
    """GPU work is asynchronous: wait for it before reading the clock."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timeit(fn, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync()
    return (time.perf_counter() - t) / steps


def matmul_ceiling(sizes=(2048, 4096), dtype=torch.bfloat16) -> dict[int, float]:
    """GFLOP/s of n x n matmuls: the most this CPU's cores do in a precision."""
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        best = min(_timeit(lambda a=a, b=b: a @ b, 2 if n > 2048 else 5, 1) for _ in range(3))
        out[n] = 2 * n**3 / best / 1e9
    return out


@torch.inference_mode()
def conv_rate(rt) -> float:
    """GFLOP/s of the model's commonest layer (64->64 3x3 conv at 32x32, batch 128) in our runtime."""
    conv = torch.nn.Conv2d(64, 64, 3, 1, 1, bias=False).to(rt.device)
    x = torch.randn(128, 64, 32, 32, device=rt.device)
    if rt.channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), rt.prepare(x)

    def f():
        with rt.autocast():
            conv(x)

    return 128 * 64 * 64 * 9 * 1024 * 2 / _timeit(f, 5, 2) / 1e9


def flops_per_pair(cfg: TrainConfig) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    m = VICReg(cfg.model)
    x = torch.randn(8, 3, 32, 32)
    with FlopCounterMode(display=False) as fc:
        terms, _, _ = m(x, x)
        terms.total.backward()
    return fc.get_total_flops() / 8


class _PILPairs(torch.utils.data.Dataset):
    """The original tool's data path: uint8 array -> PIL -> torchvision transforms, per image."""

    def __init__(self, images: np.ndarray, cfg: TrainConfig):
        from torchvision import transforms as T

        a = cfg.augment
        self.images = images
        self.t = T.Compose([
            T.RandomResizedCrop(a.size, scale=a.scale), T.RandomHorizontalFlip(a.flip_p),
            T.RandomApply([T.ColorJitter(*a.jitter)], p=a.jitter_p), T.RandomGrayscale(a.gray_p),
            T.RandomSolarize(128, p=a.solarize_p), T.ToTensor(), T.Normalize(a.mean, a.std),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i].transpose(1, 2, 0))
        return self.t(img), self.t(img)


def _loader(images: np.ndarray, cfg: TrainConfig, workers: int):
    return torch.utils.data.DataLoader(_PILPairs(images, cfg), batch_size=cfg.batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True)


def _loader_rate(images: np.ndarray, cfg: TrainConfig, workers: int, consume, batches: int) -> float:
    """Pairs/s through a fresh loader; the first 2*workers batches (prefetched while warming up)
    are drained first so that only steady-state production is timed. Workers end on return."""
    it = iter(_loader(images, cfg, workers))
    for _ in range(max(2, 2 * workers)):
        consume(next(it))
    t = time.perf_counter()
    for _ in range(batches):
        consume(next(it))
    rate = batches * cfg.batch_size / (time.perf_counter() - t)
    del it  # shuts the worker processes down before the next measurement
    return rate


def _step_fn(cfg: TrainConfig, rt, compiled: bool = False):
    torch.manual_seed(0)
    model = VICReg(cfg.model).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    fwd = torch.compile(model) if compiled else model

    def step(v_a, v_b):
        with rt.autocast():
            terms, _, _ = fwd(rt.prepare(v_a), rt.prepare(v_b))
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()

    return step


def _ceilings(r: dict, cfg: TrainConfig, fast) -> None:
    mm = matmul_ceiling()
    r["matmul_gflops"] = {str(k): v for k, v in mm.items()}
    r["matmul_fp32_gflops"] = matmul_ceiling((2048,), torch.float32)[2048]
    r["conv_gflops"] = conv_rate(fast)
    r["ceiling_gflops"] = max(max(mm.values()), r["conv_gflops"])
    r["gflop_per_pair"] = flops_per_pair(cfg) / 1e9
    peak_ratio = max(mm.values()) / r["matmul_fp32_gflops"]
    print("bf16 matmul: " + ", ".join(f"{k}^2 {v:.0f}" for k, v in mm.items())
          + f" GFLOP/s; 64->64 conv {r['conv_gflops']:.0f} GFLOP/s; "
          f"fp32 2048^2 matmul {r['matmul_fp32_gflops']:.0f} GFLOP/s (bf16/fp32 peak ratio {peak_ratio:.1f}x); "
          f"a training pair costs {r['gflop_per_pair']:.2f} GFLOP "
          f"-> ceiling {r['ceiling_gflops'] / r['gflop_per_pair']:.0f} pairs/s", flush=True)


def _steps(r: dict, cfg: TrainConfig, fast, orig, imgs, workers: int, steps: int, with_compile: bool):
    """Augmentation alone and the model step alone (on fixed pre-augmented batches)."""
    B = cfg.batch_size
    batch = imgs[:B].to(fast.device)
    g = torch.Generator(device=batch.device).manual_seed(0)  # a generator on the batch's device
    r["aug_ours"] = B / _timeit(lambda: two_views(batch, cfg.augment, g), 20, 2)
    r["aug_original"] = _loader_rate(imgs.numpy(), cfg, workers, lambda _batch: None, 12)
    v_a, v_b = two_views(batch, cfg.augment, g)
    step = _step_fn(cfg, fast)
    r["step_ours"] = B / _timeit(lambda: step(v_a, v_b), steps, 2)
    step_fp32 = _step_fn(cfg, orig)
    o_a, o_b = v_a.to(orig.device), v_b.to(orig.device)  # the views on that model's device
    r["step_original"] = B / _timeit(lambda: step_fp32(o_a, o_b), max(2, steps // 2), 1)
    if with_compile:
        t = time.perf_counter()
        step_c = _step_fn(cfg, fast, compiled=True)
        step_c(v_a, v_b)
        r["compile_seconds"] = time.perf_counter() - t
        r["step_ours_compiled"] = B / _timeit(lambda: step_c(v_a, v_b), steps, 2)
    print(f"step alone: ours {r['step_ours']:.1f} pairs/s, fp32 {r['step_original']:.1f}", flush=True)
    return step_fp32


def _end_to_end(r: dict, cfg: TrainConfig, data, imgs, step_fp32, workers: int, steps: int, data_root: str) -> None:
    """The real training generator (indexing + augmentation + step + logging) vs the PIL loader."""
    B = cfg.batch_size
    # several logged steps whatever the device (GPU runs log every 25 steps by default; each log syncs)
    log_every = max(1, (steps + 2) // 4) if torch.cuda.is_available() else 1
    with tempfile.TemporaryDirectory() as tmp:
        c = TrainConfig(epochs=1, batch_size=B, train_subset=B * (steps + 2), knn_test=0, checkpoint_dir=tmp,
                        name="bench", data=data_root, log_every=log_every)
        rates = [ev.pairs_per_s for ev in train(c, data=data) if ev.kind == "step"]
        if len(rates) < 3:
            raise RuntimeError(f"benchmark training run did not complete: {rates}")
    r["e2e_ours"] = float(np.mean(rates[2:]))
    r["e2e_original"] = _loader_rate(imgs.numpy(), cfg, workers, lambda b: step_fp32(*b), max(2, steps // 2))


def _embedding(r: dict, cfg: TrainConfig, data, fast, orig) -> None:
    """Embedding extraction (no augmentation): ours bf16 channels-last batch 512 vs fp32 NCHW batch 128."""
    m_fast = VICReg(cfg.model).backbone.to(fast.device)
    if fast.channels_last:
        m_fast = m_fast.to(memory_format=torch.channels_last)
    m_orig = VICReg(cfg.model).backbone
    test = data.test.images[:2048]
    r["embed_ours"] = len(test) / _timeit(lambda: extract_features(m_fast, test, fast, cfg.augment, 512), 2, 1)
    r["embed_original"] = 1024 / _timeit(lambda: extract_features(m_orig, test[:1024], orig, cfg.augment, 128), 1, 1)


def _report(r: dict, with_compile: bool) -> None:
    ceiling = r["ceiling_gflops"] / r["gflop_per_pair"]
    r["e2e_fraction_of_ceiling"] = r["e2e_ours"] / ceiling
    rows = [("augmentation (pairs/s)", "aug"), ("training step alone (pairs/s)", "step"),
            ("end-to-end training (pairs/s)", "e2e"), ("embedding extraction (img/s)", "embed")]
    print(f"\nCPU: {r['cpu']}")
    print(f"| {'measure':32} | {'original-style':>14} | {'vicreg':>9} | {'ratio':>6} |")
    print(f"|{'-' * 34}|{'-' * 16}|{'-' * 11}|{'-' * 8}|")
    for label, key in rows:
        o, n = r[f"{key}_original"], r[f"{key}_ours"]
        print(f"| {label:32} | {o:14.1f} | {n:9.1f} | {n / o:5.1f}x |")
    if with_compile:
        print(f"torch.compile step: {r['step_ours_compiled']:.1f} pairs/s (compile {r['compile_seconds']:.0f}s) "
              f"vs eager {r['step_ours']:.1f}")
    print(f"end-to-end = {r['e2e_ours'] * r['gflop_per_pair']:.0f} GFLOP/s = {r['e2e_fraction_of_ceiling']:.0%} "
          f"of the measured bf16 ceiling ({ceiling:.0f} pairs/s); "
          f"a 50,000-image epoch takes {50000 / r['e2e_ours'] / 60:.1f} min")


def run(batch_size: int, steps: int, data_root: str, workers: int, with_compile: bool) -> dict:
    cfg = TrainConfig(batch_size=batch_size, knn_test=0, data=data_root)
    fast, orig = make_runtime("auto"), make_runtime("cpu", "fp32", channels_last=False)
    data = load_dataset(data_root)
    imgs = data.train.images[: batch_size * 64]
    r: dict = {"cpu": cpu_kind(), "batch_size": batch_size, "threads": torch.get_num_threads(),
               "ours_runtime": fast.describe(), "original_runtime": "cpu, fp32, NCHW, PIL DataLoader"}
    print(f"{r['cpu']}; batch {batch_size}, {r['threads']} threads; ours: {r['ours_runtime']}; "
          f"original: {r['original_runtime']} ({workers} workers)", flush=True)
    _ceilings(r, cfg, fast)
    step_fp32 = _steps(r, cfg, fast, orig, imgs, workers, steps, with_compile)
    _end_to_end(r, cfg, data, imgs, step_fp32, workers, steps, data_root)
    _embedding(r, cfg, data, fast, orig)
    _report(r, with_compile)
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/throughput.py", description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    p.add_argument("--data", default=default_data_root())
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the original-style pipeline")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd step")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    r = run(a.batch_size, a.steps, a.data, a.workers, a.compile)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
