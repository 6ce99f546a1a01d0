"""Hostile checkpoint files are refused with a clear message, and none of them runs code."""
import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from vicreg.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from vicreg.config import ModelConfig, TrainConfig
from vicreg.model import VICReg

pytestmark = pytest.mark.reliability


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def _meta(**kw):
    return json.dumps({"format": "vicreg-studio/1", "config": TrainConfig().to_dict(), "epoch": 1, "step": 1, **kw})


def _write_header(path, header: dict, payload: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + payload)


def _cases(tmp_path):
    marker = str(tmp_path / "PWNED")
    torch.save({"model": _Payload(marker)}, tmp_path / "pickle.pth")
    torch.save({"model": _Payload(marker)}, tmp_path / "pickle.safetensors")  # renamed pickle
    small = VICReg(ModelConfig(projector="16-16"))
    cfg = TrainConfig(model=ModelConfig(projector="16-16"))
    meta = {"config": cfg.to_dict(), "epoch": 1, "step": 1}
    good = save_checkpoint(str(tmp_path / "good.safetensors"), small, None, meta)
    data = open(good, "rb").read()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with open(tmp_path / "huge_header.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 2**40) + b"{}")
    _write_header(tmp_path / "huge_tensor.safetensors", {"__metadata__": {"vicreg": _meta()},
                  "model.w": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}, b"\0" * 16)
    save_file({"model.w": torch.zeros(2)}, tmp_path / "no_meta.safetensors")
    for name, meta in {"wrong_epoch": _meta(epoch="x"), "wrong_config": _meta(config="oops"),
                       "wrong_model": _meta(config={**TrainConfig().to_dict(), "model": 5}),
                       "not_a_dict": json.dumps([1, 2])}.items():
        save_file({"model.w": torch.zeros(2)}, tmp_path / f"{name}.safetensors", metadata={"vicreg": meta})
    return marker, sorted(p for p in os.listdir(tmp_path) if p != "good.safetensors" and p != "good.json")


def test_every_hostile_checkpoint_is_refused_and_runs_no_code(tmp_path):
    marker, files = _cases(tmp_path)
    assert len(files) == 10
    refused = []
    for f in files:
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(str(tmp_path / f))
        assert str(tmp_path / f) in str(e.value)  # the message names the file it refused
        assert "Traceback" not in str(e.value) and len(str(e.value).splitlines()) == 1
        refused.append(f)
    assert refused == files and not os.path.exists(marker)


def test_weights_of_another_shape_are_refused_when_loaded(tmp_path):
    other = VICReg(ModelConfig(projector="16-16"))
    meta = {"config": TrainConfig().to_dict(), "epoch": 1, "step": 1}  # claims the default 2048-2048-2048
    path = save_checkpoint(str(tmp_path / "other.safetensors"), other, None, meta)
    with pytest.raises(CheckpointError, match="does not match this model"):
        load_model_state(VICReg(ModelConfig()), load_checkpoint(path))
