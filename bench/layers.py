"""Per-layer convolution benchmark (not a test): every conv shape of the CIFAR ResNet-18, forward and
backward while training, plain nn.Conv2d beside vicreg.core.fastconv.Conv2d, with the oneDNN implementation
of each weight gradient.

    python bench/layers.py [--batch_size 128] [--size 32] [--threads 2]

bf16 autocast and channels-last, as training runs on a CPU. The implementation names come from a
second pass of this script under ONEDNN_VERBOSE=1 (oneDNN prints one line per primitive it runs).
Times are medians of 7 repetitions measured in this run; the CPU kind is printed first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from vicreg.core.fastconv import swap_convs
from vicreg.core.runtime import cpu_kind


def shapes(size: int) -> list[tuple[str, int, int, int, int, int]]:
    s2, s4, s8 = size // 2, size // 4, size // 8
    return [("stem", 3, 64, 3, 1, size), ("layer1 3x3", 64, 64, 3, 1, size),
            ("layer2 3x3 s2", 64, 128, 3, 2, size), ("layer2 1x1 s2", 64, 128, 1, 2, size),
            ("layer2 3x3", 128, 128, 3, 1, s2), ("layer3 3x3 s2", 128, 256, 3, 2, s2),
            ("layer3 1x1 s2", 128, 256, 1, 2, s2), ("layer3 3x3", 256, 256, 3, 1, s4),
            ("layer4 3x3 s2", 256, 512, 3, 2, s4), ("layer4 1x1 s2", 256, 512, 1, 2, s4),
            ("layer4 3x3", 512, 512, 3, 1, s8)]


def _median_ms(fn, reps: int = 7) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _conv(ci, co, k, s, fast: bool) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Conv2d(ci, co, k, s, k // 2, bias=False).to(memory_format=torch.channels_last)
    return swap_convs(m) if fast else m


def time_layer(ci, co, k, s, side, batch, fast: bool, reps: int = 7) -> tuple[float, float]:
    """(forward ms, backward ms) of one conv; the input needs a gradient except for the stem."""
    conv = _conv(ci, co, k, s, fast)
    x = torch.randn(batch, ci, side, side).contiguous(memory_format=torch.channels_last).bfloat16()
    x.requires_grad_(ci != 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grad = torch.randn_like(conv(x))

    def fwd():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(x)

    wanted = [conv.weight, x] if x.requires_grad else [conv.weight]

    def fwd_bwd():  # autograd.grad: no accumulation into .grad, which is not part of a conv's backward
        torch.autograd.grad(fwd(), wanted, grad)

    f = _median_ms(fwd, reps)
    return f, max(_median_ms(fwd_bwd, reps) - f, 0.0)


def implementations(batch: int, size: int) -> dict[tuple[str, bool], str]:
    """{(layer, fast): "backward-weights implementation"} from one verbose pass in a child process."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    out = subprocess.run([sys.executable, __file__, "--batch_size", str(batch), "--size", str(size), "--_verbose"],
                         capture_output=True, text=True, env=env).stdout
    found: dict[tuple[str, bool], str] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("LAYER "):
            _, name, fast = line.split("|")
            current = (name, fast == "1")
        elif current and line.startswith("onednn_verbose") and ",exec," in line and "convolution" in line:
            fields = line.split(",")
            if fields[7] == "backward_weights":  # v1,primitive,exec,cpu,convolution,IMPL,PROP,...
                found[current] = fields[6]
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/layers.py", description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--size", type=int, default=32, help="the training views' side in pixels")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--_verbose", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a._verbose:  # the child pass: one backward per layer, each announced, for oneDNN's log
        for name, ci, co, k, s, side in shapes(a.size):
            for fast in (False, True):
                print(f"LAYER |{name}|{int(fast)}", flush=True)
                time_layer(ci, co, k, s, side, a.batch_size, fast, reps=1)
        return 0
    print(f"{cpu_kind()}; {torch.get_num_threads()} threads; batch {a.batch_size}, {a.size}-px views, bf16 autocast, "
          "channels-last", flush=True)
    impl = implementations(a.batch_size, a.size)
    print("\n| layer | in->out, k, stride, input side | fwd ms (nn.Conv2d -> fastconv) | bwd ms (nn.Conv2d -> "
          "fastconv) | weight-gradient implementation (plain -> fastconv) |\n|---|---|---|---|---|")
    total = [0.0, 0.0, 0.0, 0.0]
    for name, ci, co, k, s, side in shapes(a.size):
        times = (*time_layer(ci, co, k, s, side, a.batch_size, False),
                 *time_layer(ci, co, k, s, side, a.batch_size, True))
        total = [t + x for t, x in zip(total, times, strict=True)]
        f_plain, b_plain, f_fast, b_fast = times
        fast_impl = impl.get((name, True), "matrix product (torch.mm)")
        print(f"| {name} | {ci}->{co}, {k}x{k}, s{s}, {side} px | {f_plain:.2f} -> {f_fast:.2f} | {b_plain:.2f} -> "
              f"{b_fast:.2f} | {impl.get((name, False), '?')} -> {fast_impl} |", flush=True)
    print(f"| **sum of one of each** | | {total[0]:.2f} -> {total[2]:.2f} | {total[1]:.2f} -> {total[3]:.2f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
