"""Checkpoints: one safetensors file holding model weights, optimiser tensors and JSON metadata.

Written atomically (temporary file, fsync, rename) so a crash mid-write leaves the previous
checkpoint intact; loaded with safetensors, which never unpickles anything. A JSON sidecar with the
same metadata sits beside it for people and tools that want to read it without torch; the file's own
metadata is what counts, and a file whose sidecar contradicts it is refused (`_check_sidecar`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.config import TrainConfig
from .faults import Fault
from .files import atomic_write, atomic_write_text, sweep_stale_temps
from .names import SUFFIX, CheckpointError, leads_out, sidecar_path
from .sidecar import disagreement

# Settings of the run rather than of the recipe: a resume (vicreg/runfiles/resume.py) takes them from the caller.
RUN_FIELDS = ("name", "device", "precision", "data", "checkpoint_dir", "compile", "log_every", "threads",
              "knn_train", "knn_test", "watch_images", "watch_every", "save_every")
RESUME_MAY_CHANGE = (*RUN_FIELDS, "epochs")  # what two saves of one file may disagree on
# Where and how a run computes: its RUN_FIELDS, and the memory layout and BatchNorm syncing a resume keeps from
# the checkpoint. Two runs that differ only in these train the same recipe (services/reference.py).
NOT_RECIPE = (*RUN_FIELDS, "channels_last", "sync_bn")

FORMAT = "vicreg-studio/1"
# how this process runs the optimiser (fused / foreach kernels) is the live optimiser's choice, not the
# saved one's: a checkpoint from a CPU run must not switch off fused AdamW on a GPU
LIVE_FLAGS = ("fused", "foreach", "capturable", "differentiable")


@dataclass
class Checkpoint:
    path: str
    meta: dict[str, Any]  # format, config, epoch, step, metrics, optimizer layout
    tensors: dict[str, torch.Tensor]

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["config"])

    @property
    def packed(self) -> bool:
        """A demo checkpoint: backbone weights only, in 16 bit; it embeds but cannot resume."""
        return bool(self.meta.get("packed"))

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def require_resumable(self) -> None:
        """Refuse a packed checkpoint as the start of more training (it has no optimiser state)."""
        if self.packed:
            raise CheckpointError(f"{self.path} is a packed demo checkpoint (backbone only, 16-bit), so training "
                                  "cannot resume from it; train a full one with its preset")


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


def save_checkpoint(
    path: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    fault: Fault | None = None,
) -> str:
    """`extra` holds other named tensors (e.g. an RNG state as "rng.augment"); `fault`: the run's test hooks."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    meta = {"format": FORMAT, **meta}
    if opt is not None:
        t, layout = _optimizer_tensors(opt)
        tensors.update(t)
        meta["optimizer"] = layout
    return _write(path, tensors, meta, fault)


def _write(path: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], fault: Fault | None = None) -> str:
    text, side, fault = json.dumps(meta), sidecar_path(path), fault or Fault()

    def before_rename(tmp: str) -> None:
        fault.on_written("ckpt")(tmp)
        # the old sidecar goes before the new file lands: a crash between the two then leaves a
        # checkpoint with no sidecar, never one beside another save's (maybe another recipe's) sidecar
        if os.path.lexists(side):
            os.remove(side)

    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"vicreg": text}), on_written=before_rename)
    fault.reach("sidecar")
    sidecar = {k: v for k, v in meta.items() if k != "optimizer"}
    atomic_write_text(side, json.dumps(sidecar, indent=2), on_written=fault.on_written("sidecar"))
    return path


def sweep_temps(path: str) -> list[str]:
    """Remove the temporary files that killed writers of this checkpoint (and its sidecar) left."""
    return sweep_stale_temps(path) + sweep_stale_temps(sidecar_path(path))


def pack_checkpoint(ckpt: "Checkpoint", path: str, extra_meta: dict[str, Any] | None = None) -> str:
    """Write the demo form of a checkpoint: backbone weights in fp16 and the metadata, without the
    projector, optimiser or RNG state (a third of the size; embeds exactly as well, cannot resume)."""
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.tensors.items()
               if k.startswith("model.backbone.")}
    meta = {k: v for k, v in ckpt.meta.items() if k != "optimizer"}
    meta.update(extra_meta or {}, packed=True, step_in_epoch=0)
    return _write(path, tensors, meta)


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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} has an unknown checkpoint format {fmt!r}")
    _check_meta(path, meta)
    _check_sidecar(path, meta)
    return meta


def _check_meta(path: str, meta: dict[str, Any]) -> None:
    """Refuse metadata of the wrong types before anything builds a model from it."""
    for key in ("epoch", "step", "step_in_epoch"):
        value = meta.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{path} has invalid metadata: {key} must be a whole number >= 0, got {value!r}")
    if not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path} has invalid metadata: config must be a mapping")
    try:
        TrainConfig.from_dict(meta["config"]).validate()
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{path} has invalid metadata: {e}") from None


def _check_sidecar(path: str, meta: dict[str, Any]) -> None:
    """Refuse a checkpoint whose JSON sidecar contradicts it (vicreg/runfiles/sidecar.py says when it does)."""
    side = sidecar_path(path)
    if not os.path.lexists(side):
        return
    why = disagreement(side, meta, RESUME_MAY_CHANGE)
    if why:
        raise CheckpointError(f"checkpoint {path} is refused: its JSON sidecar {side} {why}; the checkpoint "
                              f"file's own metadata is what counts, so delete {side} (a save writes a fresh one)")


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
    """All weights; for a packed checkpoint only the backbone's (the projector keeps its init)."""
    state = ckpt.model_state()
    try:
        if ckpt.packed:
            prefix = "backbone."
            backbone = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
            model.backbone.load_state_dict(backbone, strict=True)
        else:
            model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        why = first[0] if first else e
        raise CheckpointError(f"checkpoint {ckpt.path} does not match this model ({why}); "
                              "check --projector and --width") from None


def load_optimizer_state(opt: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    ckpt.require_resumable()
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
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in layout["param_groups"]]
    try:
        if len(groups) != len(opt.param_groups):
            raise ValueError(f"{len(groups)} parameter groups saved, {len(opt.param_groups)} in this optimiser")
        for saved, live in zip(groups, opt.param_groups, strict=True):  # how to run it is the live one's choice
            saved.update({k: live[k] for k in LIVE_FLAGS if k in live})
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"optimiser state in {ckpt.path} does not match ({e}); "
                              "was it saved with another --optimizer?") from None
    _match_layouts(opt)


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor its parameter's memory layout: state is saved contiguous,
    and fused AdamW refuses moments whose strides differ from channels-last conv weights."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def list_checkpoints(checkpoint_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, metadata) for every readable checkpoint, newest first; unreadable files are skipped."""
    if not os.path.isdir(checkpoint_dir):
        return []
    out = []
    for f in os.listdir(checkpoint_dir):
        # dot-files are hidden, among them a killed writer's temporary file (never a name safe_name allows);
        # a symlink leading out of the folder is skipped before anything is read through it
        p = os.path.join(checkpoint_dir, f)
        if f.endswith(SUFFIX) and not f.startswith(".") and not leads_out(p, checkpoint_dir):
            try:
                out.append((p, read_meta(p)))
            except (CheckpointError, OSError):  # OSError: removed while listing
                continue
    return sorted(out, key=lambda t: os.path.getmtime(t[0]), reverse=True)
