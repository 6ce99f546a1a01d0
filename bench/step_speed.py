"""Training-step speed of the named recipes (not a test): the engine's own step (vicreg/training/run.py
`train_step`: augmentation, forward, loss, backward, optimiser) on the embedded sample's images.

    python -m bench.step_speed                                  # quick_demo and cpu120, this checkout
    python -m bench.step_speed --preset cpu120 --baseline ../old  # A/B: the same presets from another checkout

With --baseline, each preset is timed in a child process per checkout, alternating A, B, A, B (`--rounds`), so
both see the same machine in the same minutes; the table gives each one's best round and their ratio. A
checkout for the baseline: `git worktree add ../old <commit>`. Nothing here asserts a time; the CPU kind is
printed, since figures from different CPUs do not compare.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(preset: str, steps: int, threads: int) -> dict:
    """Seconds per step of `preset` (median of `steps` after two warm-up steps) in this process's checkout."""
    import torch

    from vicreg.core import distributed as ddp
    from vicreg.core.config import TrainConfig
    from vicreg.core.runtime import cpu_kind
    from vicreg.runfiles.faults import Fault
    from vicreg.runfiles.streams import epoch_order
    from vicreg.training.data import load_dataset
    from vicreg.training.run import setup_run, train_step

    sample = os.path.join(HERE, "assets", "cifar10_sample.npz")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_preset(preset).with_values(
            {"data": sample, "checkpoint_dir": tmp, "threads": threads, "budget_s": 0, "watch_images": 0,
             "knn_test": 0, "train_subset": 0, "name": "speed"})
        run = setup_run(cfg, None, load_dataset(sample), ddp.Dist(), Fault())
        order = epoch_order(run.images.shape[0], cfg.seed, 0)
        # its own timing loop rather than vicreg.training.budget.seconds_per_step: a baseline checkout brings its
        # own version of that, and both sides of an A/B must be timed the same way
        side, times = cfg.augment.view_side(0, cfg.epochs), []
        for i in range(steps + 2):
            t0 = time.perf_counter()
            train_step(run, run.batch(order, i % run.steps_per_epoch), cfg.scaled_lr() * 0.1, side)
            times.append(time.perf_counter() - t0)
        run.log.close()
    secs = sorted(times[2:])[len(times[2:]) // 2]
    return {"preset": preset, "s_per_step": secs, "images_per_s": cfg.batch_size / secs,
            "views_per_s": cfg.batch_size * cfg.augment.views / secs, "cpu": cpu_kind(),
            "threads": torch.get_num_threads()}


def child(tree: str, preset: str, steps: int, threads: int) -> dict:
    # this file's `measure`, run over `tree`'s engine (first on the path: its vicreg is the one imported)
    code = (f"import sys, json, importlib.util; sys.path.insert(0, {tree!r}); "
            f"s = importlib.util.spec_from_file_location('step_speed', {os.path.abspath(__file__)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            f"print(json.dumps(m.measure({preset!r}, {steps}, {threads})))")
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", help="default: quick_demo and cpu120")
    p.add_argument("--baseline", default=None, help="another checkout to time the same presets in, alternating")
    p.add_argument("--rounds", type=int, default=2, help="with --baseline: A/B rounds per preset")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    trees = [HERE] + ([os.path.abspath(args.baseline)] if args.baseline else [])
    rows = []
    for preset in args.preset or ["quick_demo", "cpu120"]:
        best: dict[str, dict] = {}
        for _ in range(args.rounds if args.baseline else 1):
            for tree in trees:
                r = child(tree, preset, args.steps, args.threads)
                if tree not in best or r["s_per_step"] < best[tree]["s_per_step"]:
                    best[tree] = r
        row = {"preset": preset, **{("this" if t == HERE else "baseline"): best[t] for t in trees}}
        if args.baseline:
            row["speedup"] = round(best[trees[1]]["s_per_step"] / best[HERE]["s_per_step"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{rows[0]['this']['cpu']}, {rows[0]['this']['threads']} threads")
    ab = args.baseline is not None
    print("| preset | this: s/step | images/s | views/s |" + (" baseline: images/s | speedup |" if ab else ""))
    print("|---|---|---|---|" + ("---|---|" if ab else ""))
    for r in rows:
        t = r["this"]
        line = f"| `{r['preset']}` | {t['s_per_step']:.3f} | {t['images_per_s']:.1f} | {t['views_per_s']:.1f} |"
        if args.baseline:
            line += f" {r['baseline']['images_per_s']:.1f} | {r['speedup']:.2f}x |"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
