"""Hostile checkpoint files are refused with a clear message, and none of them runs code."""
import json
import os
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.presets import DEFAULT_MODEL
from vicreg.runfiles.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_model_state,
    read_meta,
    save_checkpoint,
)

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


def _with_sidecar(tmp_path, good: str, name: str, write) -> str:
    """A copy of the good checkpoint under `name`, with its sidecar replaced by `write(sidecar_path)`."""
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(open(good, "rb").read())
    write(str(tmp_path / f"{name}.json"))
    return str(path)


def _json(obj):
    return lambda p: open(p, "w").write(json.dumps(obj))


@pytest.fixture
def sidecar_good(tmp_path):
    cfg = TrainConfig(model=ModelConfig(projector="16-16"))
    good = save_checkpoint(str(tmp_path / "good.safetensors"), VICReg(cfg.model), None,
                           {"config": cfg.to_dict(), "epoch": 2, "step": 6})
    return good, json.load(open(tmp_path / "good.json"))


def test_a_sidecar_that_disagrees_with_its_checkpoint_is_refused(tmp_path, sidecar_good):
    good, side = sidecar_good
    marker = str(tmp_path / "PWNED")
    other_recipe = {**side["config"], "lr": 9.0}
    cases = {
        "not_json": lambda p: open(p, "w").write("{not json"),
        "pickle": lambda p: torch.save({"x": _Payload(marker)}, p),
        "not_an_object": _json([1, 2]),
        "nested": lambda p: open(p, "w").write("[" * 200_000),
        "too_large": lambda p: open(p, "wb").truncate(17 << 20),
        "a_folder": os.mkdir,
        "other_format": _json({**side, "format": "other/2"}),
        "claims_packed": _json({**side, "packed": True}),
        "other_recipe": _json({**side, "config": other_recipe}),
        "other_run_settings_same_step": _json({**side, "config": {**side["config"], "threads": 3}}),
        "no_config": _json({k: v for k, v in side.items() if k != "config"}),
        "step_ahead": _json({**side, "step": 7}),
        "epoch_ahead": _json({**side, "epoch": 3}),
        "step_not_a_number": _json({**side, "step": "6"}),
        "behind_but_other_recipe": _json({**side, "step": 3, "epoch": 1, "config": other_recipe}),
    }
    if hasattr(os, "mkfifo"):
        cases["a_fifo"] = os.mkfifo  # reading it would block forever
    refused = []
    for name, write in cases.items():
        path = _with_sidecar(tmp_path, good, name, write)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        text = str(e.value)
        assert path in text and str(tmp_path / f"{name}.json") in text, text  # names the file and the sidecar
        assert "delete" in text and "own metadata is what counts" in text and len(text.splitlines()) == 1, text
        refused.append(name)
    assert refused == list(cases) and not os.path.exists(marker)
    assert [os.path.basename(p) for p, _ in list_checkpoints(str(tmp_path))] == ["good.safetensors"]
    print(f"sidecars that disagree, refused {len(refused)}/{len(cases)}")


def test_the_refusal_says_what_disagrees(tmp_path, sidecar_good):
    good, side = sidecar_good
    recipe = {**side["config"], "lr": 9.0}
    for name, claim, says in [("ahead", {**side, "step": 9}, "claims step 9 where the file has reached 6"),
                              ("recipe", {**side, "config": recipe}, "disagrees with it about the config (lr)"),
                              ("packed", {**side, "packed": True}, "says packed True")]:
        with pytest.raises(CheckpointError, match=re.escape(says)):
            load_checkpoint(_with_sidecar(tmp_path, good, name, _json(claim)))


def test_a_sidecar_behind_its_checkpoint_is_a_crash_trace_and_is_accepted(tmp_path, sidecar_good):
    good, side = sidecar_good
    marker = str(tmp_path / "PWNED")
    # the previous save's sidecar (a crash between the checkpoint's rename and the sidecar's write),
    # from before a resume that changed the run settings and the total epochs
    behind = {**side, "step": 3, "epoch": 1, "config": {**side["config"], "threads": 3, "epochs": 5}}
    path = _with_sidecar(tmp_path, good, "lagging", _json(behind))
    assert load_checkpoint(path).meta["step"] == 6
    assert load_checkpoint(_with_sidecar(tmp_path, good, "no_sidecar", lambda _p: None)).meta["step"] == 6
    # the next save writes a sidecar that agrees
    cfg = TrainConfig(model=ModelConfig(projector="16-16"))
    save_checkpoint(path, VICReg(cfg.model), None, {"config": cfg.to_dict(), "epoch": 3, "step": 9})
    assert json.load(open(tmp_path / "lagging.json"))["step"] == 9 and load_checkpoint(path).meta["step"] == 9
    assert not os.path.exists(marker)


def test_the_shipped_checkpoint_agrees_with_its_sidecar():
    ckpt = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                        f"{DEFAULT_MODEL}.safetensors")
    if not os.path.isfile(ckpt):
        pytest.skip("no shipped checkpoint in this checkout")
    assert os.path.isfile(ckpt[: -len(".safetensors")] + ".json")
    assert load_checkpoint(ckpt).packed and read_meta(ckpt)["step"] > 0
