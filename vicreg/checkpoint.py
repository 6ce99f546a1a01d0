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

from .config import TrainConfig
from .faults import Fault, reach
from .files import atomic_write, atomic_write_text, sweep_stale_temps
from .sidecar import disagreement

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

    @property
    def packed(self) -> bool:
        """A demo checkpoint: backbone weights only, in 16 bit; it embeds but cannot resume."""
        return bool(self.meta.get("packed"))

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}


def checkpoint_stem(path: str) -> str:
    """'checkpoints/cpu90.safetensors' -> 'cpu90': the run name a checkpoint file carries."""
    base = os.path.basename(path)
    return base[: -len(SUFFIX)] if base.endswith(SUFFIX) else os.path.splitext(base)[0]


# The files a run writes beside each other in the checkpoint folder: the checkpoint, its JSON sidecar,
# the metrics log (appended to, and cut back to its last whole line, in place) and INFERENCE's output.
RUN_FILE_SUFFIXES = (SUFFIX, ".json", ".metrics.jsonl", ".embeddings.npy")


def leads_out(path: str, folder: str) -> bool:
    """True if `path` resolves (symlinks followed) to somewhere outside `folder`."""
    root, real = os.path.realpath(folder), os.path.realpath(path)
    return os.path.commonpath([root, real]) != root


def safe_name(name: str, checkpoint_dir: str | None = None) -> str:
    """Checkpoint name -> file stem; refuses anything that could escape the checkpoint folder: a path
    (`../x`, `/abs`, `a/b`, `a\\b`), a hidden name, control characters (NUL, newline, ...), an overlong
    name and, given the folder, a name whose files there are symlinks leading out of it: the atomic
    writes would only replace such a link, but the metrics log is appended to and cut through it."""
    name = str(name)
    if name.endswith(SUFFIX):
        base = name[: -len(SUFFIX)]
    else:
        base = os.path.splitext(name)[0] if name.endswith((".pth", ".pt")) else name
    shown = repr(name if len(name) <= 80 else name[:80] + "…")
    if not base or base in (".", "..") or "/" in base or "\\" in base or os.path.isabs(name) or base.startswith("."):
        raise CheckpointError(f"invalid checkpoint name {shown}: use a plain file name such as 'vicreg_model' "
                              "(it is saved under the checkpoint folder)")
    if any(ord(c) < 32 or ord(c) == 127 for c in base) or len(base) > 200:
        raise CheckpointError(f"invalid checkpoint name {shown}: use at most 200 letters, digits, '-' or '_', "
                              "without control characters such as newlines")
    if checkpoint_dir is not None:
        for suffix in RUN_FILE_SUFFIXES:
            path = os.path.join(checkpoint_dir, base + suffix)
            if os.path.islink(path) and leads_out(path, checkpoint_dir):
                raise CheckpointError(f"the checkpoint name {base!r} is taken by a link ({base}{suffix}) that "
                                      "leads out of the checkpoint folder; choose another name")
    return base


def checkpoint_path(checkpoint_dir: str, name: str) -> str:
    """Where run `name` saves; refuses names whose files in the folder are links leading out of it."""
    return os.path.join(checkpoint_dir, safe_name(name, checkpoint_dir) + SUFFIX)


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
    """`extra` holds other named tensors (e.g. an RNG state as "rng.augment"); `fault` is the test hook."""
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
    text, side = json.dumps(meta), sidecar_path(path)

    def before_rename(tmp: str) -> None:
        if fault is not None:
            fault.on_written("ckpt")(tmp)
        # the old sidecar goes before the new file lands: a crash between the two then leaves a
        # checkpoint with no sidecar, never one beside another save's (maybe another recipe's) sidecar
        if os.path.lexists(side):
            os.remove(side)

    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"vicreg": text}), on_written=before_rename)
    reach(fault, "sidecar")
    sidecar = {k: v for k, v in meta.items() if k != "optimizer"}
    atomic_write_text(side, json.dumps(sidecar, indent=2), on_written=fault.on_written("sidecar") if fault else None)
    return path


def sweep_temps(path: str) -> list[str]:
    """Remove the temporary files that killed writers of this checkpoint (and its sidecar) left."""
    return sweep_stale_temps(path) + sweep_stale_temps(sidecar_path(path))


def sidecar_path(path: str) -> str:
    """The JSON copy of a checkpoint's metadata, for people and tools without torch."""
    return path[: -len(SUFFIX)] + ".json" if path.endswith(SUFFIX) else path + ".json"


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
    """Refuse a checkpoint whose JSON sidecar contradicts it (vicreg/sidecar.py says when it does)."""
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
        raise CheckpointError(f"checkpoint {ckpt.path} does not match this model ({why}); check --projector") from None


def load_optimizer_state(opt: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    layout = ckpt.meta.get("optimizer")
    if ckpt.packed:
        raise CheckpointError(f"{ckpt.path} is a packed demo checkpoint (backbone only, 16-bit), so training cannot "
                              "resume from it; train a full one with its preset (see its metadata's 'command')")
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
    # how this process runs the optimiser (fused / foreach kernels) is the live optimiser's choice, not
    # the saved one's: a checkpoint from a CPU run must not switch off fused AdamW on a GPU
    for saved, live in zip(groups, opt.param_groups):
        saved.update({k: live[k] for k in LIVE_FLAGS if k in live})
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"optimiser state in {ckpt.path} does not match ({e}); "
                              "was it saved with another --optimizer?") from None
    _match_layouts(opt)


LIVE_FLAGS = ("fused", "foreach", "capturable", "differentiable")


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


# Settings of the run rather than of the recipe: a resume takes them from the caller.
RUN_FIELDS = ("name", "device", "precision", "data", "checkpoint_dir", "compile", "log_every", "threads",
              "knn_train", "knn_test")
RESUME_MAY_CHANGE = (*RUN_FIELDS, "epochs")  # what two saves of one file may disagree on


def resume_config(ckpt: Checkpoint, run: TrainConfig, epochs: int | None = None) -> TrainConfig:
    """The one resume rule (CLI, app and trainer): the checkpoint's recipe (model, loss,
    augmentation, optimiser, schedule shape, data subset, seed) with the caller's RUN_FIELDS.

    `epochs` is the run's new total: None finishes the planned run, which is exact (the same weights
    as never stopping). A larger total continues the same schedule as if it had been planned that
    long from the start: the warm-up the trainer computes for the new total (warmup_epochs, capped at
    half the run), then the cosine stretched to the new last step, so the lr rises again at the resume. `more_epochs`
    turns "N more epochs" into that total.
    """
    if ckpt.packed:
        raise CheckpointError(f"{ckpt.path} is a packed demo checkpoint (backbone only, 16-bit), so training "
                              "cannot resume from it; train a full one with its preset")
    cfg = TrainConfig.from_dict({**ckpt.meta["config"], **{k: getattr(run, k) for k in RUN_FIELDS}})
    cfg.epochs = int(epochs) if epochs is not None else cfg.epochs
    done = int(ckpt.meta.get("epoch", 0))
    if done >= cfg.epochs:
        raise CheckpointError(f"{checkpoint_stem(ckpt.path)} has finished its {done} planned epochs; "
                              "ask for more epochs to train further (RE_TRAIN --epochs N trains N more)")
    return cfg.validate()


def more_epochs(ckpt: Checkpoint, n: int) -> int:
    """The total that trains `n` more epochs from where the checkpoint stands (a checkpoint saved
    inside an epoch finishes that epoch as the first of the n)."""
    if n < 1:
        raise CheckpointError(f"the number of extra epochs must be at least 1, got {n}")
    return int(ckpt.meta.get("epoch", 0)) + n
