"""Command line: python -m vicreg {TRAIN,RE_TRAIN,EVALUATE,INFERENCE} [options].

Every expected failure (bad mode, missing or mismatched checkpoint, unreadable data, a name that
escapes the checkpoint folder) ends with one `error: ...` line on stderr and exit code 2.

Paths and names. The command line runs as the local user on their own machine, so the paths they type
are theirs to choose: `--model_path` may read a checkpoint anywhere, and `--checkpoint_dir`, `--data`
and `--output` may point anywhere. A run's name (`--name`, or the checkpoint's own name when RE_TRAIN
continues it) is different: it is a file stem inside the checkpoint folder, checked before anything
is loaded (`safe_name`): no `../`, absolute path, separator, hidden name or control character (NUL,
newline), and none of the run's files there may be a symlink leading out of the folder, since the
metrics log is appended to (and cut back to its last whole line) in place. INFERENCE's default output
in the checkpoint folder follows the same link rule. (The app is stricter: it only opens the listed
checkpoints, see services/catalog.py.)
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading

from .orchestration.cli import MODES, RECIPE_OPTIONS, CLIError, build_parser, given_options, train_config


def _fill_run_defaults(args) -> None:
    """EVALUATE / INFERENCE read these options directly: unset ones take TrainConfig's values."""
    from .core.config import TrainConfig

    defaults = TrainConfig()
    for opt in ("device", "precision", "threads", "seed", "data", "checkpoint_dir"):
        if getattr(args, opt) is None:
            setattr(args, opt, getattr(defaults, opt))


def _resume(args) -> int:
    """RE_TRAIN: finish the checkpoint's planned run, or (--epochs N) train N more epochs; into the
    same file unless --name gives a new one."""
    from .core.config import TrainConfig
    from .runfiles.checkpoint import load_checkpoint
    from .runfiles.names import safe_name
    from .runfiles.resume import resume_run

    if args.name:
        safe_name(args.name, args.checkpoint_dir or TrainConfig().checkpoint_dir)  # before loading anything
    ckpt = load_checkpoint(_resolve_model(args))  # fail early, with the checkpoint's own message
    ignored = [f"--{o}" for o in RECIPE_OPTIONS if getattr(args, o) is not None] + (["--preset"] if args.preset else [])
    if ignored and _rank() == 0:
        print(f"note: RE_TRAIN keeps the checkpoint's recipe; ignoring {', '.join(ignored)}")
    run = TrainConfig().with_values(given_options(args, ["device", "precision", "threads", "log_every", "data",
                                                        "compile", "knn_train", "knn_test"]))
    cfg = resume_run(ckpt, run, args.name or None, args.checkpoint_dir or None, args.epochs)
    return _run_training(cfg, ckpt.path)


def _rank() -> int:
    from .core.distributed import env_world  # torchrun's RANK, read in one place

    return env_world()[0]


def _stop_signals(stop: threading.Event) -> dict:
    """Ctrl-C or SIGTERM (what `kill`, a container's stop and a job scheduler send) finishes the step and
    saves. One process: a second one aborts without saving. Under torchrun the launcher forwards its own
    SIGINT/SIGTERM to every worker right after the terminal's, so a repeat only re-requests the stop; the
    ranks agree on the step, and torchrun's shutdown timeout (--shutdown_timeout, 30 s) is the hard stop."""
    from tqdm import tqdm

    from .core.distributed import env_world

    world = env_world()[1]

    def on_signal(_signum, _frame):
        if stop.is_set():
            if world == 1:
                raise KeyboardInterrupt
            return
        stop.set()
        if _rank() == 0:
            tqdm.write("stopping after this step" + (" (Ctrl-C again to abort without saving)..." if world == 1
                                                     else " on every rank..."))

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def _run_training(cfg, resume: str | None) -> int:
    from .runfiles.names import safe_name
    from .training.train import train

    safe_name(cfg.name, cfg.checkpoint_dir)  # before the data loads: a bad name or a link out fails at once
    stop = threading.Event()
    old = _stop_signals(stop)
    try:
        return _report(cfg, train(cfg, stop=stop, resume=resume), quiet=_rank() != 0)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _report(cfg, events, quiet: bool) -> int:
    """Print the run's events (nothing but errors on ranks other than 0) and return the exit code."""
    from tqdm import tqdm

    from .runfiles.events import rate_unit
    from .runfiles.names import metrics_path

    bar, unit = None, "pairs/s"
    for ev in events:
        if quiet and ev.kind != "end":
            continue
        if ev.kind == "start":
            print(f"{'resuming' if ev.resumed_from else 'training'} {ev.run} on {ev.runtime}: {ev.n_train} images, "
                  f"epochs {ev.start_epoch + 1}-{ev.epochs}, {ev.steps_per_epoch} steps/epoch; "
                  f"metrics -> {metrics_path(cfg.checkpoint_dir, cfg.name)}")
            for note in ev.notes:
                print(f"note: {note}")
            unit = rate_unit(ev.config)
            bar = tqdm(total=ev.total_steps, initial=ev.start_step, unit="step", dynamic_ncols=True)
        elif ev.kind == "step":
            if ev.warning:
                bar.write(f"warning: {ev.warning}")
            bar.update(ev.step - bar.n)
            bar.set_postfix_str(f"ep {ev.epoch + 1} loss {ev.loss:.3f} inv {ev.invariance:.3f} "
                                f"var {ev.variance:.3f} "
                                f"cov {ev.covariance:.3f} std {ev.emb_std:.3f} {ev.pairs_per_s:.0f} {unit}")
        elif ev.kind == "watch":
            parts = ([f"Explore's guess right for {ev.guess:.1%} of {ev.images} test images"] if ev.guess is not None
                     else []) + ([f"kNN top-1 {ev.knn_top1:.2%}"] if ev.knn_top1 is not None else [])
            (bar.write if bar else print)(f"{'untrained' if ev.step == 0 else f'step {ev.step}'}: {', '.join(parts)}")
        elif ev.kind == "epoch":
            knn = f"kNN top-1 {ev.knn_top1:.2%}, " if ev.knn_top1 is not None else ""
            saved = f"saved {ev.checkpoint}" if ev.checkpoint else "not saved (--save_every)"
            (bar.write if bar else print)(f"epoch {ev.epoch}: {knn}{ev.epoch_seconds:.0f}s, {saved}")
        else:
            if bar:
                bar.close()
            msg = f"{ev.status}: {ev.reason}" + (f"; checkpoint {ev.checkpoint}" if ev.checkpoint else "")
            if ev.status == "failed":
                print(f"error: {msg}", file=sys.stderr)
                return ev.exit_code
            if not quiet:
                print(msg)
            return 0
    return 1


def _resolve_model(args, required: bool = True) -> str | None:
    if args.random_init and args.mode in ("EVALUATE", "INFERENCE"):
        return None
    if not args.model_path:
        if required:
            raise CLIError(f"{args.mode} needs --model_path pointing at a checkpoint "
                           "(e.g. checkpoints/vicreg_model.safetensors)")
        return None
    return args.model_path


def _evaluate(args) -> int:
    from tqdm import tqdm

    from .core.runtime import make_runtime
    from .runfiles.files import atomic_write_text
    from .training.data import load_dataset
    from .training.embed import load_model
    from .training.evaluate import evaluate_backbone

    path = _resolve_model(args)
    rt = make_runtime(args.device, args.precision, threads=args.threads)
    model, cfg, _ = load_model(path, rt, args.seed)
    data = load_dataset(args.data, cfg.augment.size)
    with tqdm(total=100, unit="%", dynamic_ncols=True) as bar:
        def progress(f: float, desc: str) -> None:
            bar.set_description_str(desc)
            bar.update(int(f * 100) - bar.n)

        rep = evaluate_backbone(model.backbone, data.train.images, data.train.labels, data.test.images,
                                data.test.labels, data.classes, rt, cfg.augment, probe_epochs=args.probe_epochs,
                                progress=progress)
    who = path or "random-initialised backbone"
    print(f"{who}: {rep.line()}")
    print("per class: " + ", ".join(f"{c} {a:.0%}" for c, a in zip(rep.classes, rep.per_class, strict=True)))
    report = rep.to_dict(model=who, runtime=rt.describe())
    print(json.dumps({k: report[k] for k in ("model", "linear_top1", "knn_top1", "per_class")}))
    if args.output:  # the whole report (with the confusion matrix) as JSON
        atomic_write_text(args.output, json.dumps(report, indent=1))
        print(f"report -> {args.output}")
    return 0


def _inference(args) -> int:
    import numpy as np

    from .core.runtime import make_runtime
    from .runfiles.names import checkpoint_stem, leads_out
    from .training.data import IMAGE_EXTS, load_dataset
    from .training.embed import embed_images, load_files, load_model

    path = _resolve_model(args)
    stem = checkpoint_stem(path) if path else "random_init"
    out = args.output or os.path.join(args.checkpoint_dir, f"{stem}.embeddings.npy")
    if not args.output and os.path.islink(out) and leads_out(out, args.checkpoint_dir):  # before any work
        raise CLIError(f"{os.path.basename(out)} in the checkpoint folder is a link that leads out of it; "
                       "remove the link or choose the file with --output")
    out = out if out.endswith(".npy") else out + ".npy"  # np.save would add it; say the real name
    rt = make_runtime(args.device, args.precision, threads=args.threads)
    model, cfg, _ = load_model(path, rt, args.seed)
    if args.images:
        files = []
        for item in args.images:
            if os.path.isdir(item):
                files += sorted(os.path.join(r, f) for r, _, fs in os.walk(item)
                                for f in fs if f.lower().endswith(IMAGE_EXTS))
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
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    np.save(out, emb)
    norms = np.linalg.norm(emb, axis=1)
    print(f"embedded {what}: {emb.shape[0]} x {emb.shape[1]} float32 -> {out}")
    print(f"norm mean {norms.mean():.3f} (min {norms.min():.3f}, max {norms.max():.3f}); "
          f"per-dim std mean {emb.std(0).mean():.4f}; "
          f"dims never active {(emb.max(0) <= 0).sum()}/{emb.shape[1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .runfiles.names import CheckpointError, safe_name
    from .training.data import DataError

    try:
        args = build_parser().parse_args(argv)
        args.mode = args.mode.upper()
        if args.mode not in MODES:
            raise CLIError(f"unknown mode {args.mode!r}: use one of {', '.join(MODES)}")
        if args.name is not None:  # in every mode, before anything loads (TRAIN and RE_TRAIN add the link check)
            safe_name(args.name)
        if args.mode == "TRAIN":
            return _run_training(train_config(args), None)
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
