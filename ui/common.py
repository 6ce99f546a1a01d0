"""Shared bits of the Gradio layer: preset labels and knobs, the admin secret, messages, and the rule
that visitors see what to do while the details (paths, environment) go to the server log."""
from __future__ import annotations

import html
import logging
import re

from services.errors import BadImage, CheckpointError, DataError
from services.training import PRESETS, TrainConfig
from services.training import QUICK as QUICK  # the Quick CPU demo's preset, for the page's shortcuts to it

log = logging.getLogger("vicreg.app")

# Friendly labels of the engine's PRESETS (vicreg/core/presets.py); only presets that exist are offered.
PRESET_LABELS = {"quick_demo": "Quick CPU demo", "long_demo": "10-minute CPU demo", "cpu30": "30-minute CPU recipe",
                 "cpu90": "An older default model's recipe (two views, about 90 min on a 2-core CPU)",
                 "cpu150": "Previous default model's recipe (4 views of 16 px, 12 epochs, about 2 h on a 2-core CPU)",
                 "cpu120": "Default model recipe (4 views of 16 px, 18 epochs, about 2 h on a 2-core CPU)",
                 "full": "Full CIFAR-10 recipe"}
CUSTOM = "custom"
# The Train tab's knobs, as TrainConfig field names (dotted for nested ones). The tab, its Start handler and the
# /train_start API name each by its last part (`var_coeff`): `knob_dict` maps them back. New knobs go at the
# end: the API's positional parameters keep their order.
KNOBS = ("name", "epochs", "batch_size", "optimizer", "lr", "train_subset", "loss.inv_coeff", "loss.var_coeff",
         "loss.cov_coeff", "knn_train", "knn_test", "warmup_epochs", "augment.views", "augment.view_size")


NO_CHECKPOINT = (
    "**No trained checkpoint yet.** A random network's features would make this page meaningless. "
    "Train one first: the **Quick CPU demo** preset in the Train tab takes a few minutes on a CPU "
    "(use the button below), or load one from the Hugging Face Hub above."
)
# A checkpoint value that is not one of the listed ones (a stale page, or a client sending any path)
UNLISTED = ("That checkpoint is not in the list (removed, renamed, or not a readable VICReg Studio checkpoint): "
            "pick one from the list, or press ↻ Refresh list.")
DATA_HELP = (
    "To use the full CIFAR-10 dataset, set the `VICREG_DATA` environment variable to a CIFAR-10 folder "
    "(an image folder with `train/<class>/` and `test/<class>/`, or torchvision's `cifar-10-batches-py` "
    "folder's parent) and restart the app, or use **Download CIFAR-10** at the top of the page."
)


def preset_choices() -> list[tuple[str, str]]:
    """(label, preset key) for the presets that exist, then Custom."""
    return [(label, key) for key, label in PRESET_LABELS.items() if key in PRESETS] + [("Custom", CUSTOM)]


def base_config(preset: str | None) -> TrainConfig:
    """The preset's recipe (Custom: the defaults); the knobs are applied on top of it."""
    return TrainConfig.from_preset(preset) if preset in PRESETS else TrainConfig()


def knob_arg(dotted: str) -> str:
    """A knob's argument name: its field name without the dots ("loss.var_coeff" -> "var_coeff")."""
    return dotted.rpartition(".")[2]


def knob_values(cfg: TrainConfig) -> dict:
    """The knobs' values for a config, by dotted name, as the form shows them (0 for an unset lr)."""
    return cfg.shown(KNOBS)


def knob_dict(by_arg: dict) -> dict:
    """Knob values by argument name -> by dotted name (TrainConfig.with_values takes them)."""
    names = {knob_arg(k): k for k in KNOBS}
    if unknown := sorted(set(by_arg) - set(names)):
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    return {names[arg]: value for arg, value in by_arg.items()}


def msg(text: str, kind: str = "info") -> str:
    icon = {"info": "ℹ️", "ok": "✅", "warn": "⚠️", "error": "❌"}[kind]
    return f"{icon} {text}"


def esc(s) -> str:
    return html.escape(str(s))


_ABS_PATH = re.compile(r"(?<![\w.~/])/(?:[^\s'\"<>:,;()\[\]{}|]+/)*([^\s'\"<>:,;()\[\]{}|/]*)")


def scrub(text) -> str:
    """Text with every absolute path cut to its last part ('/srv/app/checkpoints/x.safetensors' ->
    'x.safetensors'), for messages built from exceptions."""
    return _ABS_PATH.sub(lambda m: m.group(1) or "…", str(text))


def failure(what: str, exc: BaseException, hint: str = "") -> str:
    """Log the details server-side; return a message that says what failed and what to do."""
    log.warning("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
    return msg(f"{what}. {hint}".strip(), "error")


def explain(what: str, exc: BaseException, *, checkpoint: str | None = None, data: str | None = None,
            hint: str = "The details are in the server log.") -> str:
    """The one rule from an error (services/errors.py) to what a visitor reads, by what they can do about it:
    an image that cannot be read says why; a checkpoint that cannot be used (pick another), data that cannot
    be loaded (how to get it), anything else (`hint`) say what failed, their details going to the server log.
    `checkpoint`, `data`: what failed in those cases, where "`what`: the cause" would say it less well."""
    if isinstance(exc, BadImage):
        return msg(f"This image cannot be used: {esc(exc)}", "error")
    if isinstance(exc, CheckpointError):
        return failure(checkpoint or f"{what}: the checkpoint cannot be used", exc, "Pick another one.")
    if isinstance(exc, DataError):
        return failure(data or f"{what}: CIFAR-10 could not be loaded", exc, DATA_HELP)
    return failure(what, exc, hint)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
