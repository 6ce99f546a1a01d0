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


# CLI option -> TrainConfig field (dotted for nested configs). Defaults come from TrainConfig(), so
# the parser never repeats them, and an option left out never overrides a preset.
CONFIG_OPTIONS: dict[str, tuple[str, type, str]] = {
    "epochs": ("epochs", int, "TRAIN: total epochs; RE_TRAIN: epochs to train beyond the checkpoint (default: finish its plan)"),
    "batch_size": ("batch_size", int, "images per step (two views each)"),
    "optimizer": ("optimizer", str, "lars or adamw"),
    "lr": ("lr", float, "base learning rate, scaled by batch_size/256 (default: lars 0.3, adamw 1e-3)"),
    "weight_decay": ("weight_decay", float, "default: lars 1e-4, adamw 1e-5"),
    "warmup_epochs": ("warmup_epochs", float, "linear warm-up before the cosine decay"),
    "projector": ("model.projector", str, "expander widths, e.g. 2048-2048-2048"),
    "inv_coeff": ("loss.inv_coeff", float, "invariance weight (lambda)"),
    "var_coeff": ("loss.var_coeff", float, "variance weight (mu)"),
    "cov_coeff": ("loss.cov_coeff", float, "covariance weight (nu)"),
    "view_size": ("augment.view_size", int, "side of the training views (0: the image size)"),
    "seed": ("seed", int, "weight init, sample order and augmentation"),
    "train_subset": ("train_subset", int, "train on N evenly spaced training images (0: all)"),
    "device": ("device", str, "auto, cpu, cuda, cuda:N or mps"),
    "precision": ("precision", str, "auto, bf16 or fp32"),
    "threads": ("threads", int, "torch CPU threads (0: torch's default); use 1 on a shared CPU"),
    "log_every": ("log_every", int, "steps between metric read-backs (0: every step on CPU, 25 on GPU)"),
    "name": ("name", str, "run name: saved as <checkpoint_dir>/<name>.safetensors"),
    "checkpoint_dir": ("checkpoint_dir", str, "folder for checkpoints and metrics (env VICREG_CHECKPOINTS)"),
    "data": ("data", str, "image folder with train/ and test/, a packed .npz, or a torchvision CIFAR-10 root (env VICREG_DATA)"),
}
RECIPE_OPTIONS = ("batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "projector", "inv_coeff", "var_coeff",
                  "cov_coeff", "view_size", "seed", "train_subset")


def _field(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    from .config import PRESETS, TrainConfig

    defaults = TrainConfig()
    p = _Parser(prog="python -m vicreg", description="VICReg self-supervised learning on CIFAR-10 or an image folder.")
    p.add_argument("mode", help="TRAIN, RE_TRAIN (continue --model_path), EVALUATE (linear probe + kNN) or INFERENCE (embeddings to .npy)")
    p.add_argument("--preset", default=None, help=f"TRAIN a named recipe ({', '.join(PRESETS)}); explicit options win")
    p.add_argument("--model_path", default=None, help="checkpoint to resume, evaluate or embed with")
    for opt, (dotted, kind, text) in CONFIG_OPTIONS.items():
        choices = {"optimizer": ["lars", "adamw"], "precision": ["auto", "bf16", "fp32"]}.get(opt)
        p.add_argument(f"--{opt}", type=kind, default=None, choices=choices, help=f"{text} [{_field(defaults, dotted)}]")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--probe_epochs", type=int, default=100, help="EVALUATE: linear-probe epochs on cached features")
    p.add_argument("--random_init", action="store_true", help="EVALUATE/INFERENCE a random-initialised backbone (baseline)")
    p.add_argument("--images", nargs="*", default=None, help="INFERENCE: image files or folders (default: the test set)")
    p.add_argument("--output", default=None, help="INFERENCE: embeddings .npy (default <checkpoint_dir>/<name>.embeddings.npy); EVALUATE: report .json")
    return p


def _given(args, names) -> dict:
    """{dotted field: value} for the options the user actually gave."""
    out: dict = {}
    for opt in names:
        value = getattr(args, opt)
        if value is None:
            continue
        dotted = CONFIG_OPTIONS[opt][0] if opt in CONFIG_OPTIONS else opt
        head, _, tail = dotted.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    return out


def _config(args):
    from .config import TrainConfig

    given = _given(args, [*CONFIG_OPTIONS, "compile"])
    if "train_subset" in given:
        given["train_subset"] = given["train_subset"] or None
    base = TrainConfig.from_preset(args.preset) if args.preset else TrainConfig()
    return base.updated(given).validate()


def _fill_run_defaults(args) -> None:
    """EVALUATE / INFERENCE read these options directly: unset ones take TrainConfig's values."""
    from .config import TrainConfig

    defaults = TrainConfig()
    for opt in ("device", "precision", "threads", "seed", "data", "checkpoint_dir"):
        if getattr(args, opt) is None:
            setattr(args, opt, getattr(defaults, opt))


def _resume(args) -> int:
    """RE_TRAIN: finish the checkpoint's planned run, or (--epochs N) train N more epochs; into the
    same file unless --name gives a new one."""
    from .checkpoint import checkpoint_stem, load_checkpoint, more_epochs, resume_config
    from .config import TrainConfig

    ckpt = load_checkpoint(_resolve_model(args))  # fail early, with the checkpoint's own message
    ignored = [f"--{o}" for o in RECIPE_OPTIONS if getattr(args, o) is not None]
    if ignored or args.preset:
        print(f"note: RE_TRAIN keeps the checkpoint's recipe; ignoring {', '.join(ignored + (['--preset'] if args.preset else []))}")
    run = TrainConfig().updated(_given(args, ["device", "precision", "threads", "log_every", "data", "compile"]))
    run.name = args.name or checkpoint_stem(ckpt.path)
    if args.checkpoint_dir:
        run.checkpoint_dir = args.checkpoint_dir
    elif not args.name:  # no new name: continue in the same file, wherever it is
        run.checkpoint_dir = os.path.dirname(ckpt.path) or "."
    total = more_epochs(ckpt, args.epochs) if args.epochs is not None else None
    return _run_training(resume_config(ckpt, run, total), ckpt.path)


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
    from tqdm import tqdm

    from .data import load_dataset
    from .embed import load_model
    from .evaluate import evaluate_backbone
    from .files import atomic_write_text
    from .runtime import make_runtime

    path = _resolve_model(args)
    rt = make_runtime(args.device, args.precision, threads=args.threads)
    model, cfg, _ = load_model(path, rt, args.seed)
    data = load_dataset(args.data, cfg.augment.size)
    with tqdm(total=100, unit="%", dynamic_ncols=True) as bar:
        def progress(f: float, desc: str) -> None:
            bar.set_description_str(desc)
            bar.update(int(f * 100) - bar.n)

        rep = evaluate_backbone(model.backbone, data.train.images, data.train.labels, data.test.images, data.test.labels,
                                data.classes, rt, cfg.augment, probe_epochs=args.probe_epochs, progress=progress)
    who = path or "random-initialised backbone"
    print(f"{who}: linear probe top-1 {rep.linear.top1:.2%} (train {rep.linear.train_top1:.2%}), "
          f"kNN (k=200, T=0.1) top-1 {rep.knn_top1:.2%} [{rep.seconds:.0f}s]")
    print("per class: " + ", ".join(f"{c} {a:.0%}" for c, a in zip(rep.classes, rep.linear.per_class)))
    report = {"model": who, "linear_top1": rep.linear.top1, "knn_top1": rep.knn_top1, "train_top1": rep.linear.train_top1,
              "per_class": rep.linear.per_class, "confusion": rep.linear.confusion, "classes": rep.classes,
              "n_train": len(data.train), "n_test": len(data.test), "probe_epochs": args.probe_epochs,
              "seconds": rep.seconds, "runtime": rt.describe()}
    print(json.dumps({k: report[k] for k in ("model", "linear_top1", "knn_top1", "per_class")}))
    if args.output:  # the whole report (with the confusion matrix) as JSON
        atomic_write_text(args.output, json.dumps(report, indent=1))
        print(f"report -> {args.output}")
    return 0


def _inference(args) -> int:
    import numpy as np

    from .checkpoint import checkpoint_stem
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
    out = args.output or os.path.join(args.checkpoint_dir, f"{checkpoint_stem(path) if path else 'random_init'}.embeddings.npy")
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
            return _run_training(_config(args), None)
        if args.mode == "RE_TRAIN":
            return _resume(args)
        _fill_run_defaults(args)
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
