import json
import os

import pytest
import torch

from vicreg import checkpoint as ck
from vicreg.config import ModelConfig, TrainConfig
from vicreg.model import VICReg
from vicreg.optim import make_optimizer


def _trained(cfg):
    torch.manual_seed(0)
    m = VICReg(cfg.model)
    opt = make_optimizer(m, cfg)
    x = torch.randn(4, 3, 32, 32)
    terms, _, _ = m(x, x + 0.1)
    terms.total.backward()
    opt.step()
    return m, opt


@pytest.mark.parametrize("optimizer", ["lars", "adamw"])
def test_round_trip_restores_model_and_optimizer(tmp_path, optimizer):
    cfg = TrainConfig(optimizer=optimizer, model=ModelConfig(projector="32-16"))
    m, opt = _trained(cfg)
    path = ck.save_checkpoint(str(tmp_path / "a.safetensors"), m, opt, {"config": cfg.to_dict(), "epoch": 3, "step": 7})
    c = ck.load_checkpoint(path)
    assert c.meta["epoch"] == 3 and c.config.optimizer == optimizer and c.config.model.projector == "32-16"
    m2 = VICReg(c.config.model)
    opt2 = make_optimizer(m2, c.config)
    ck.load_model_state(m2, c)
    ck.load_optimizer_state(opt2, c)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    side = json.load(open(tmp_path / "a.json"))
    assert side["epoch"] == 3 and "optimizer" not in side


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(model=ModelConfig(projector="8-8"))
    m, opt = _trained(cfg)
    path = ck.save_checkpoint(str(tmp_path / "b.safetensors"), m, opt, {"config": cfg.to_dict(), "epoch": 1, "step": 1})
    before = open(path, "rb").read()

    def boom(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        ck.save_checkpoint(path, m, opt, {"config": cfg.to_dict(), "epoch": 2, "step": 2})
    assert open(path, "rb").read() == before
    assert [f for f in os.listdir(tmp_path) if ".tmp" in f] == []


def test_mismatched_and_bad_files_give_clear_errors(tmp_path):
    cfg = TrainConfig(model=ModelConfig(projector="8-8"))
    m, opt = _trained(cfg)
    path = ck.save_checkpoint(str(tmp_path / "c.safetensors"), m, opt, {"config": cfg.to_dict(), "epoch": 1, "step": 1})
    with pytest.raises(ck.CheckpointError, match="does not match"):
        ck.load_model_state(VICReg(ModelConfig(projector="16-16")), ck.load_checkpoint(path))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ck.CheckpointError, match="cannot read"):
        ck.load_checkpoint(str(tmp_path / "junk.safetensors"))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ck.CheckpointError, match="not a VICReg Studio checkpoint"):
        ck.load_checkpoint(str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_checkpoint(str(tmp_path / "missing.safetensors"))
    assert [p for p, _ in ck.list_checkpoints(str(tmp_path))] == [path]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "..", ".hidden", "", "x\\y"])
def test_names_cannot_escape_the_checkpoint_folder(bad):
    with pytest.raises(ck.CheckpointError, match="invalid checkpoint name"):
        ck.safe_name(bad)


def test_original_style_names_are_accepted():
    assert ck.safe_name("vicreg_model.pth") == "vicreg_model"
    assert ck.checkpoint_path("checkpoints", "run1") == os.path.join("checkpoints", "run1.safetensors")
