"""Command line: python -m vicreg {TRAIN,RE_TRAIN,EVALUATE,INFERENCE} [options].

Every expected failure (bad mode, missing or mismatched checkpoint, unreadable data, a name that
escapes the checkpoint folder) ends with one `error: ...` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

MODES = ("TRAIN", "RE_TRAIN", "EVALUATE", "INFERENCE")


class CLIError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + traceback-like noise
        raise CLIError(f"{message} (see python -m vicreg --help)")


def build_parser() -> argparse.ArgumentParser:
    from .config import default_checkpoint_dir, default_data_root

    p = _Parser(prog="python -m vicreg", description="VICReg self-supervised learning on CIFAR-10 or an image folder.")
    p.add_argument("mode", help="TRAIN, RE_TRAIN (resume --model_path), EVALUATE (linear probe + kNN) or INFERENCE (embeddings to .npy)")
    p.add_argument("--preset", default=None, help="TRAIN with a named recipe (cpu30: 30 minutes on a 2-core CPU); explicit options win")
    p.add_argument("--epochs", type=int, default=None, help="total epochs (TRAIN default 20; RE_TRAIN default: the checkpoint's)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--model_path", default=None, help="checkpoint to resume, evaluate or embed with")
    p.add_argument("--name", default="vicreg_model", help="checkpoint name, saved as <checkpoint_dir>/<name>.safetensors")
    p.add_argument("--checkpoint_dir", default=default_checkpoint_dir())
    p.add_argument("--data", default=default_data_root(), help="image folder with train/ and test/, or a torchvision CIFAR-10 root (env VICREG_DATA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--optimizer", default="lars", choices=["lars", "adamw"])
    p.add_argument("--lr", type=float, default=None, help="base learning rate, scaled by batch_size/256 (lars 0.3, adamw 1e-3)")
    p.add_argument("--weight_decay", type=float, default=None)
    p.add_argument("--warmup_epochs", type=float, default=2.0)
    p.add_argument("--projector", default="2048-2048-2048")
    p.add_argument("--inv_coeff", type=float, default=25.0)
    p.add_argument("--var_coeff", type=float, default=25.0)
    p.add_argument("--cov_coeff", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_subset", type=int, default=None, help="train on N evenly spaced training images")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--log_every", type=int, default=0, help="steps between metric read-backs (0: every step on CPU, 25 on GPU)")
    p.add_argument("--probe_epochs", type=int, default=100, help="EVALUATE: linear-probe epochs on cached features")
    p.add_argument("--random_init", action="store_true", help="EVALUATE/INFERENCE a random-initialised backbone (baseline)")
    p.add_argument("--images", nargs="*", default=None, help="INFERENCE: image files or folders (default: the test set)")
    p.add_argument("--output", default=None, help="INFERENCE: .npy path (default <checkpoint_dir>/<name>.embeddings.npy)")
    return p


def _apply_preset(args) -> None:
    from .config import PRESETS

    if args.preset not in PRESETS:
        raise CLIError(f"unknown preset {args.preset!r}: use one of {', '.join(PRESETS)}")
    defaults = build_parser()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) == defaults.get_default(key):  # an option given explicitly wins
            setattr(args, key, value)
    if args.name == "vicreg_model":
        args.name = args.preset


def _config(args):
    from .config import LossConfig, ModelConfig, TrainConfig

    return TrainConfig(
        epochs=args.epochs or 20, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, seed=args.seed, device=args.device,
        precision=args.precision, compile=args.compile, train_subset=args.train_subset, threads=args.threads, log_every=args.log_every,
        data=args.data, name=args.name, checkpoint_dir=args.checkpoint_dir,
        model=ModelConfig(projector=args.projector),
        loss=LossConfig(inv_coeff=args.inv_coeff, var_coeff=args.var_coeff, cov_coeff=args.cov_coeff),
    ).validate()


def _run_training(cfg, resume: str | None) -> int:
    from tqdm import tqdm

    from .checkpoint import safe_name
    from .train import metrics_path, train

    safe_name(cfg.name)
    stop = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: finish the step and save; second: hard stop
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        tqdm.write("stopping after this step (Ctrl-C again to abort without saving)...")

    old = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    bar = None
    try:
        for ev in train(cfg, stop=stop, resume=resume):
            if ev.kind == "start":
                print(f"{'resuming' if ev.resumed_from else 'training'} {ev.run} on {ev.runtime}: {ev.n_train} images, "
                      f"epochs {ev.start_epoch + 1}-{ev.epochs}, {ev.steps_per_epoch} steps/epoch; metrics -> {metrics_path(cfg)}")
                bar = tqdm(total=ev.total_steps, initial=ev.start_step, unit="step", dynamic_ncols=True)
            elif ev.kind == "step":
                bar.update(ev.step - bar.n)
                bar.set_postfix_str(f"ep {ev.epoch + 1} loss {ev.loss:.3f} inv {ev.invariance:.3f} var {ev.variance:.3f} "
                                    f"cov {ev.covariance:.3f} std {ev.emb_std:.3f} {ev.pairs_per_s:.0f} pairs/s")
            elif ev.kind == "epoch":
                knn = f"kNN top-1 {ev.knn_top1:.2%}, " if ev.knn_top1 is not None else ""
                (bar.write if bar else print)(f"epoch {ev.epoch}: {knn}{ev.epoch_seconds:.0f}s, saved {ev.checkpoint}")
            else:
                if bar:
                    bar.close()
                msg = f"{ev.status}: {ev.reason}" + (f"; checkpoint {ev.checkpoint}" if ev.checkpoint else "")
                if ev.status == "failed":
                    print(f"error: {msg}", file=sys.stderr)
                    return 1
                print(msg)
                return 0
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return 1


def _resolve_model(args, required: bool = True) -> str | None:
    if args.random_init and args.mode in ("EVALUATE", "INFERENCE"):
        return None
    if not args.model_path:
        if required:
            raise CLIError(f"{args.mode} needs --model_path pointing at a checkpoint (e.g. checkpoints/vicreg_model.safetensors)")
        return None
    return args.model_path


def _evaluate(args) -> int:
    from .data import load_dataset
    from .embed import load_model
    from .evaluate import evaluate_backbone
    from .runtime import make_runtime

    path = _resolve_model(args)
    rt = make_runtime(args.device, args.precision, threads=args.threads)
    model, cfg, _ = load_model(path, rt, args.seed)
    data = load_dataset(args.data, cfg.augment.size)
    from tqdm import tqdm

    with tqdm(total=100, unit="%", dynamic_ncols=True) as bar:
        def progress(f: float, desc: str) -> None:
            bar.set_description_str(desc)
            bar.update(int(f * 100) - bar.n)

        rep = evaluate_backbone(model.backbone, data.train.images, data.train.labels, data.test.images, data.test.labels,
                                data.classes, rt, cfg.augment, probe_epochs=args.probe_epochs, progress=progress)
    who = path or "random-initialised backbone"
    print(f"{who}: linear probe top-1 {rep.linear.top1:.2%} (train {rep.linear.train_top1:.2%}), kNN (k=200, T=0.1) top-1 {rep.knn_top1:.2%} [{rep.seconds:.0f}s]")
    print("per class: " + ", ".join(f"{c} {a:.0%}" for c, a in zip(rep.classes, rep.linear.per_class)))
    print(json.dumps({"model": who, "linear_top1": rep.linear.top1, "knn_top1": rep.knn_top1, "per_class": rep.linear.per_class}))
    return 0


def _inference(args) -> int:
    import numpy as np

    from .data import IMAGE_EXTS, load_dataset
    from .embed import embed_images, load_files, load_model
    from .runtime import make_runtime

    path = _resolve_model(args)
    rt = make_runtime(args.device, args.precision, threads=args.threads)
    model, cfg, _ = load_model(path, rt, args.seed)
    if args.images:
        files = []
        for item in args.images:
            if os.path.isdir(item):
                files += sorted(os.path.join(r, f) for r, _, fs in os.walk(item) for f in fs if f.lower().endswith(IMAGE_EXTS))
            elif os.path.isfile(item):
                files.append(item)
            else:
                raise CLIError(f"no such image file or folder: {item}")
        if not files:
            raise CLIError("no images found in " + ", ".join(args.images))
        try:
            images = load_files(files, cfg.augment.size)
        except OSError as e:
            raise CLIError(f"cannot read image: {e}") from None
        what = f"{len(files)} image file(s)"
    else:
        images = load_dataset(args.data, cfg.augment.size).test.images
        what = "the test set"
    emb = embed_images(model.backbone, images, rt, cfg)
    out = args.output or os.path.join(args.checkpoint_dir, f"{os.path.splitext(os.path.basename(path or 'random_init'))[0]}.embeddings.npy")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    np.save(out, emb)
    norms = np.linalg.norm(emb, axis=1)
    print(f"embedded {what}: {emb.shape[0]} x {emb.shape[1]} float32 -> {out}")
    print(f"norm mean {norms.mean():.3f} (min {norms.min():.3f}, max {norms.max():.3f}); per-dim std mean {emb.std(0).mean():.4f}; "
          f"dims never active {(emb.max(0) <= 0).sum()}/{emb.shape[1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError

    try:
        args = build_parser().parse_args(argv)
        args.mode = args.mode.upper()
        if args.mode not in MODES:
            raise CLIError(f"unknown mode {args.mode!r}: use one of {', '.join(MODES)}")
        if args.mode == "TRAIN":
            if args.preset:
                _apply_preset(args)
            return _run_training(_config(args), None)
        if args.mode == "RE_TRAIN":
            path = _resolve_model(args)
            from .checkpoint import load_checkpoint

            old = load_checkpoint(path)  # fail early, with the checkpoint's own message
            cfg = _config(args)
            cfg.epochs = args.epochs or old.config.epochs
            if old.meta["epoch"] >= cfg.epochs:
                raise CLIError(f"{old.path} already has {old.meta['epoch']} of {cfg.epochs} epochs; pass --epochs N with N > {old.meta['epoch']} to train further")
            if args.name == "vicreg_model":  # no new name given: continue in the same file
                cfg.name = os.path.splitext(os.path.basename(old.path))[0]
                cfg.checkpoint_dir = os.path.dirname(old.path) or "."
            return _run_training(cfg, old.path)
        if args.mode == "EVALUATE":
            return _evaluate(args)
        return _inference(args)
    except (CLIError, CheckpointError, DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
