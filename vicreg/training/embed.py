"""Loading a trained backbone and turning images into embeddings (8 x its width features: 512 for ResNet-18)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.config import TrainConfig
from ..core.model import VICReg
from ..core.runtime import Runtime
from ..runfiles.checkpoint import Checkpoint, load_checkpoint, load_model_state
from .data import load_image_file
from .evaluate import extract_features


def load_model(path: str | None, rt: Runtime, seed: int = 0) -> tuple[VICReg, TrainConfig, Checkpoint | None]:
    """A checkpoint's model in eval mode, or (path None) a random-initialised one as a baseline."""
    ckpt = load_checkpoint(path) if path else None
    cfg = ckpt.config if ckpt else TrainConfig()
    torch.manual_seed(seed)
    model = VICReg(cfg.model)
    if ckpt is not None:
        load_model_state(model, ckpt)
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), cfg, ckpt


def load_files(paths: list[str], size: int = 32) -> torch.Tensor:
    """Image files -> (N, 3, size, size) uint8, short side resized and centre-cropped."""
    return torch.from_numpy(np.stack([load_image_file(p, size) for p in paths]))


def embed_images(backbone: nn.Module, images: torch.Tensor, rt: Runtime, cfg: TrainConfig, progress=None) -> np.ndarray:
    return extract_features(backbone, images, rt, cfg.augment, progress=progress).numpy()
