"""Checkpoints: one safetensors file holding model weights, optimiser tensors and JSON metadata.

Written atomically (temporary file, fsync, rename) so a crash mid-write leaves the previous
checkpoint intact; loaded with safetensors, which never unpickles anything. A JSON sidecar with the
same metadata sits beside it for people and tools that want to read it without torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TrainConfig

SUFFIX = ".safetensors"
FORMAT = "vicreg-studio/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not match the model asked for."""


@dataclass
class Checkpoint:
    path: str
    meta: dict[str, Any]  # format, config, epoch, step, metrics, optimizer layout
    tensors: dict[str, torch.Tensor]

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["config"])

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}


def safe_name(name: str) -> str:
    """Checkpoint name -> file stem; refuses anything that could escape the checkpoint folder."""
    base = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else os.path.splitext(name)[0] if name.endswith((".pth", ".pt")) else name
    if not base or base in (".", "..") or "/" in base or "\\" in base or os.path.isabs(name) or base.startswith("."):
        raise CheckpointError(f"invalid checkpoint name {name!r}: use a plain file name such as 'vicreg_model' (it is saved under the checkpoint folder)")
    if "\x00" in base or len(base) > 200:
        raise CheckpointError(f"invalid checkpoint name {name!r}")
    return base


def checkpoint_path(checkpoint_dir: str, name: str) -> str:
    return os.path.join(checkpoint_dir, safe_name(name) + SUFFIX)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(
    path: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> str:
    """`extra` holds other named tensors (e.g. an RNG state as "rng.augment")."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    meta = {"format": FORMAT, **meta}
    if opt is not None:
        t, layout = _optimizer_tensors(opt)
        tensors.update(t)
        meta["optimizer"] = layout
    text = json.dumps(meta)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"vicreg": text}))

    def write_json(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump({k: v for k, v in meta.items() if k != "optimizer"}, f, indent=2)

    _atomic_write(path[: -len(SUFFIX)] + ".json" if path.endswith(SUFFIX) else path + ".json", write_json)
    return path


def read_meta(path: str) -> dict[str, Any]:
    """Header only: cheap, for listing checkpoints."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("vicreg")
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a VICReg Studio checkpoint (no metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata: {e}") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path} has an unknown checkpoint format {meta.get('format')!r}")
    return meta


def load_checkpoint(path: str) -> Checkpoint:
    if not os.path.isfile(path):
        if path.endswith((".pth", ".pt")) and os.path.isfile(os.path.splitext(path)[0] + SUFFIX):
            path = os.path.splitext(path)[0] + SUFFIX
        else:
            raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    return Checkpoint(path, meta, tensors)


def load_model_state(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    try:
        model.load_state_dict(ckpt.model_state(), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {ckpt.path} does not match this model ({first[0] if first else e}); check --projector") from None


def load_optimizer_state(opt: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    layout = ckpt.meta.get("optimizer")
    if layout is None:
        raise CheckpointError(f"checkpoint {ckpt.path} has no optimiser state, so training cannot resume from it")
    state: dict[int, dict[str, Any]] = {}
    for key, v in ckpt.tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for key, v in layout["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    # JSON turned tuples (AdamW's betas) into lists; give them back their type
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()} for g in layout["param_groups"]]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"optimiser state in {ckpt.path} does not match ({e}); was it saved with another --optimizer?") from None


def list_checkpoints(checkpoint_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, metadata) for every readable checkpoint, newest first; unreadable files are skipped."""
    if not os.path.isdir(checkpoint_dir):
        return []
    out = []
    for f in os.listdir(checkpoint_dir):
        if f.endswith(SUFFIX):
            p = os.path.join(checkpoint_dir, f)
            try:
                out.append((p, read_meta(p)))
            except CheckpointError:
                continue
    return sorted(out, key=lambda t: os.path.getmtime(t[0]), reverse=True)
