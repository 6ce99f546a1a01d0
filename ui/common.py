"""Shared bits of the Gradio layer: checkpoint choices, the admin secret, presets, messages."""
from __future__ import annotations

import hmac
import html
import os

from vicreg.checkpoint import list_checkpoints
from vicreg.config import PRESETS as CONFIG_PRESETS
from vicreg.config import TrainConfig, default_checkpoint_dir

ADMIN_ENV = "VICREG_ADMIN_TOKEN"
NO_CHECKPOINT = (
    "**No trained checkpoint yet.** A random network's features would make this page meaningless. "
    "Train one first: the **Quick CPU demo** preset in the Train tab takes about two minutes on a CPU "
    "(use the button below), or load one from the Hugging Face Hub above."
)

# Quick CPU demo: ~0.9 s per step at batch 64 on a 2-core CPU, so the loss visibly falls within a minute.
QUICK = dict(name="quick_demo", epochs=3, batch_size=64, optimizer="lars", lr=0.0, train_subset=2560,
             inv=25.0, var=25.0, cov=1.0, knn_train=1000, knn_test=250, warmup=0.5)
_d = TrainConfig()
FULL = dict(name="cifar10_full", epochs=_d.epochs, batch_size=_d.batch_size, optimizer=_d.optimizer, lr=0.0,
            train_subset=0, inv=_d.loss.inv_coeff, var=_d.loss.var_coeff, cov=_d.loss.cov_coeff,
            knn_train=_d.knn_train, knn_test=_d.knn_test, warmup=_d.warmup_epochs)
_c = {**_d.to_dict(), **CONFIG_PRESETS["cpu30"]}
CPU30 = dict(name="cpu30", epochs=_c["epochs"], batch_size=_c["batch_size"], optimizer=_c["optimizer"], lr=_c["lr"],
             train_subset=_c["train_subset"], inv=_d.loss.inv_coeff, var=_d.loss.var_coeff, cov=_d.loss.cov_coeff,
             knn_train=_d.knn_train, knn_test=_d.knn_test, warmup=_c["warmup_epochs"])
PRESETS = {"Quick CPU demo": QUICK, "30-minute CPU recipe": CPU30, "Full CIFAR-10 recipe": FULL}
KNOBS = ["name", "epochs", "batch_size", "optimizer", "lr", "train_subset", "inv", "var", "cov", "knn_train", "knn_test", "warmup"]


def checkpoint_dir() -> str:
    return default_checkpoint_dir()


def checkpoint_choices() -> list[tuple[str, str]]:
    """(label, path) for every readable checkpoint, newest first."""
    out = []
    for path, meta in list_checkpoints(checkpoint_dir()):
        cfg = meta.get("config", {})
        knn = (meta.get("metrics") or {}).get("knn_top1")
        part = " (mid-epoch)" if meta.get("step_in_epoch") else ""
        label = f"{os.path.basename(path)[:-12]} · epoch {meta.get('epoch', '?')}/{cfg.get('epochs', '?')}{part}"
        if knn is not None:
            label += f" · kNN {100 * knn:.1f}%"
        out.append((label, path))
    return out


def valid_checkpoint(path: str | None) -> str | None:
    """The path if it is one of the listed checkpoints (never an arbitrary file a client sends)."""
    if not path:
        return None
    return path if path in {p for _, p in checkpoint_choices()} else None


def admin_required() -> bool:
    return bool(os.environ.get(ADMIN_ENV))


def admin_error(secret: str | None) -> str | None:
    """None if the caller may start/stop training, else a message."""
    token = os.environ.get(ADMIN_ENV)
    if not token:
        return None
    if not secret:
        return "This deployment requires the admin secret to start or stop training; enter it in the 'Admin secret' box."
    if not hmac.compare_digest(secret.encode(), token.encode()):
        return "Wrong admin secret."
    return None


def msg(text: str, kind: str = "info") -> str:
    icon = {"info": "ℹ️", "ok": "✅", "warn": "⚠️", "error": "❌"}[kind]
    return f"{icon} {text}"


def esc(s) -> str:
    return html.escape(str(s))


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
