"""The command line's vocabulary: options mapped onto TrainConfig fields, and the config they build.

Every config option defaults to None ("not given"), so defaults live only in TrainConfig and an
option left out never overrides a preset.
"""
from __future__ import annotations

import argparse

from ..core.config import TrainConfig
from ..core.presets import PRESETS
from ..runfiles.names import checkpoint_stem, safe_name

MODES = ("TRAIN", "RE_TRAIN", "EVALUATE", "INFERENCE")

class CLIError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + traceback-like noise
        raise CLIError(f"{message} (see python -m vicreg --help)")


# CLI option -> (TrainConfig field, dotted for nested configs; type; help).
CONFIG_OPTIONS: dict[str, tuple[str, type, str]] = {
    "epochs": ("epochs", int, "TRAIN: total epochs; RE_TRAIN: epochs to train beyond the checkpoint "
               "(default: finish its plan)"),
    "batch_size": ("batch_size", int, "images per step (two views each)"),
    "optimizer": ("optimizer", str, "lars or adamw"),
    "lr": ("lr", float, "base learning rate, scaled by batch_size/256 (0 or unset: lars 0.3, adamw 1e-3)"),
    "weight_decay": ("weight_decay", float, "default: lars 1e-4, adamw 1e-5"),
    "warmup_epochs": ("warmup_epochs", float, "linear warm-up before the cosine decay"),
    "projector": ("model.projector", str, "expander widths, e.g. 2048-2048-2048"),
    "width": ("model.width", int, "channels of the backbone's first stage, doubled at each later stage (64: "
              "ResNet-18; 32: half as wide, a quarter of the compute)"),
    "inv_coeff": ("loss.inv_coeff", float, "invariance weight (lambda)"),
    "var_coeff": ("loss.var_coeff", float, "variance weight (mu)"),
    "cov_coeff": ("loss.cov_coeff", float, "covariance weight (nu)"),
    "view_size": ("augment.view_size", int, "side of the training views (0: the image size)"),
    "views": ("augment.views", int, "views of each image per step (2: VICReg's pair; more: multi-view VICReg, "
              "usually with small views)"),
    "full_views": ("augment.full_views", int, "of the views, how many at the images' full size (the rest at "
                   "--view_size): --views 6 --full_views 2 --view_size 16 trains 2 x 32 + 4 x 16 px"),
    "view_sizes": ("augment.view_sizes", str, "progressive resizing: view sides over equal parts of the run, "
                   "e.g. 16-24-32"),
    "crop_scale": ("augment.scale", str, "the random crops' share of the image, as lo:hi"),
    "seed": ("seed", int, "weight init, sample order and augmentation"),
    "train_subset": ("train_subset", int, "train on N evenly spaced training images (0: all)"),
    "device": ("device", str, "auto, cpu, cuda, cuda:N or mps"),
    "precision": ("precision", str, "auto, bf16 or fp32"),
    "threads": ("threads", int, "torch CPU threads (0: the CPUs this process may use); use 1 on a shared CPU"),
    "log_every": ("log_every", int, "steps between metric read-backs (0: every step on CPU, 25 on GPU)"),
    "knn_train": ("knn_train", int, "per-epoch kNN monitor: training images in its bank"),
    "knn_test": ("knn_test", int, "per-epoch kNN monitor: test images queried (0: off)"),
    "budget_s": ("budget_s", float, "seconds of training to size the run to (its epochs fitted to them on this "
                 "machine); 0: --epochs"),
    "watch_images": ("watch_images", int, "learning monitor: test images guessed leave-one-out as Explore guesses "
                     "(0: off)"),
    "watch_every": ("watch_every", float, "learning monitor: seconds of training between its points"),
    "precise_bn": ("precise_bn", int, "clean training images that re-estimate the backbone's BatchNorm statistics "
                   "when the run finishes (0: keep the training views')"),
    "save_every": ("save_every", float, "seconds between the checkpoints written at the end of epochs (0: every epoch; "
                   "the last epoch and a stop always save)"),
    "name": ("name", str, "run name: saved as <checkpoint_dir>/<name>.safetensors"),
    "checkpoint_dir": ("checkpoint_dir", str, "folder for checkpoints and metrics (env VICREG_CHECKPOINTS, else "
                       "<VICREG_STORAGE>/checkpoints)"),
    "data": ("data", str, "image folder with train/ and test/, a packed .npz, or a torchvision CIFAR-10 root "
             "(env VICREG_DATA)"),
}
RECIPE_OPTIONS = ("batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "projector", "width", "inv_coeff",
                  "var_coeff", "cov_coeff", "view_size", "view_sizes", "views", "full_views", "crop_scale", "seed",
                  "train_subset", "precise_bn", "sync_bn")


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = _Parser(prog="python -m vicreg", description="VICReg self-supervised learning on CIFAR-10 or an image folder.")
    p.add_argument("mode", help="TRAIN, RE_TRAIN (continue --model_path), EVALUATE (linear probe + kNN) or "
                                "INFERENCE (embeddings to .npy)")
    p.add_argument("--preset", default=None, help=f"TRAIN a named recipe ({', '.join(PRESETS)}); explicit options win")
    p.add_argument("--model_path", default=None, help="checkpoint to resume, evaluate or embed with")
    for opt, (dotted, kind, text) in CONFIG_OPTIONS.items():
        choices = {"optimizer": ["lars", "adamw"], "precision": ["auto", "bf16", "fp32"]}.get(opt)
        p.add_argument(f"--{opt}", type=kind, default=None, choices=choices,
                       help=f"{text} [{defaults.get(dotted)}]")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--sync_bn", action="store_true", default=None,
                   help="under torchrun: BatchNorm statistics over the global batch in the backbone too "
                        "(the projector's always are)")
    p.add_argument("--probe_epochs", type=int, default=100, help="EVALUATE: linear-probe epochs on cached features")
    p.add_argument("--random_init", action="store_true",
                   help="EVALUATE/INFERENCE a random-initialised backbone (baseline)")
    p.add_argument("--images", nargs="*", default=None,
                   help="INFERENCE: image files or folders (default: the test set)")
    p.add_argument("--output", default=None, help="INFERENCE: embeddings .npy (default "
                   "<checkpoint_dir>/<name>.embeddings.npy); EVALUATE: the report as .json")
    return p


def given_options(args, names) -> dict:
    """{dotted TrainConfig field: value} for the options the user actually gave (TrainConfig.with_values
    takes it)."""
    return {CONFIG_OPTIONS[opt][0] if opt in CONFIG_OPTIONS else opt: getattr(args, opt) for opt in names
            if getattr(args, opt) is not None}


def train_config(args) -> TrainConfig:
    """TRAIN's config: TrainConfig(), or the preset, with the options given on top."""
    given = given_options(args, [*CONFIG_OPTIONS, "compile", "sync_bn"])
    if "name" in given:
        given["name"] = safe_name(given["name"])  # "--name my_model.pth" names the run "my_model"
    base = TrainConfig.from_preset(args.preset) if args.preset else TrainConfig()
    return base.with_values(given).validate()


def train_args(cfg: TrainConfig) -> list[str]:
    """TRAIN's command line for `cfg` (every option given, so no preset is needed): what the app runs under
    torchrun. Raises ValueError for a config that the options cannot express."""
    args = ["TRAIN"]
    for opt, (dotted, _, _) in CONFIG_OPTIONS.items():
        value = cfg.get(dotted)
        if value is not None:  # None: the field's own default (weight_decay: the optimizer's)
            args.append(f"--{opt}={':'.join(map(str, value)) if isinstance(value, tuple) else value}")
    args += [f"--{flag}" for flag in ("compile", "sync_bn") if cfg.get(flag)]
    rebuilt = train_config(build_parser().parse_args(args))
    if rebuilt != cfg:
        differ = [k for k, v in rebuilt.to_dict().items() if v != cfg.to_dict()[k]]
        raise ValueError(f"this run's settings cannot all be given on the command line ({', '.join(differ)})")
    return args


def resume_args(cfg: TrainConfig, checkpoint: str, meta: dict) -> list[str]:
    """RE_TRAIN's command line that continues `checkpoint` (its metadata `meta`) as `cfg`, a resume_config of it:
    the run's own settings, and --epochs N when cfg's total is not the checkpoint's plan."""
    args = ["RE_TRAIN", f"--model_path={checkpoint}", f"--checkpoint_dir={cfg.checkpoint_dir}"]
    if cfg.name != checkpoint_stem(checkpoint):
        args.append(f"--name={cfg.name}")
    args += [f"--{opt}={cfg.get(opt)}" for opt in ("device", "precision", "threads", "log_every", "data", "knn_train",
                                                     "knn_test")]
    args += ["--compile"] if cfg.compile else []
    if cfg.epochs != int(meta["config"]["epochs"]):
        args.append(f"--epochs={cfg.epochs - int(meta.get('epoch', 0))}")
    return args
