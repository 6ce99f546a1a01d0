import json
import os

import pytest
import torch

from vicreg.core.config import AugmentConfig, LossConfig, ModelConfig, TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.optim import make_optimizer
from vicreg.runfiles import checkpoint as ck
from vicreg.runfiles import names, resume


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
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
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

    def boom(_tensors, filename, **_metadata):
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
        names.safe_name(bad)


def test_original_style_names_are_accepted():
    assert names.safe_name("vicreg_model.pth") == "vicreg_model"
    assert names.checkpoint_path("checkpoints", "run1") == os.path.join("checkpoints", "run1.safetensors")


# --- the one resume rule ---------------------------------------------------------------------------

def _saved(tmp_path, name, cfg, epoch, step, **meta):
    """A real checkpoint of a tiny model whose metadata says it stands at `epoch` / `step`."""
    m, opt = _trained(cfg)
    return ck.load_checkpoint(ck.save_checkpoint(str(tmp_path / f"{name}.safetensors"), m, opt,
                                                 {"config": cfg.to_dict(), "epoch": epoch, "step": step, **meta}))


RECIPE = TrainConfig(epochs=4, batch_size=64, optimizer="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=0.5, seed=5,
                     train_subset=640, model=ModelConfig(projector="32-16"),
                     loss=LossConfig(inv_coeff=10.0, var_coeff=0.0, cov_coeff=2.0), augment=AugmentConfig(view_size=24),
                     name="orig", device="cpu", data="/old/data", checkpoint_dir="/old/dir", knn_test=1000)


def test_resume_finishes_the_planned_run(tmp_path):
    c = _saved(tmp_path, "half", RECIPE, epoch=1, step=10)
    cfg = resume.resume_config(c, TrainConfig())
    assert cfg.epochs == 4
    assert resume.resume_config(c, TrainConfig(epochs=99)).epochs == 4  # the caller's epochs is not a total


def test_n_more_epochs_gives_done_plus_n(tmp_path):
    c = _saved(tmp_path, "done", RECIPE, epoch=4, step=40, complete=True)
    assert resume.more_epochs(c, 3) == 7
    assert resume.resume_config(c, TrainConfig(), resume.more_epochs(c, 3)).epochs == 7
    half = _saved(tmp_path, "mid", RECIPE, epoch=2, step=25, step_in_epoch=5)  # inside epoch 3
    assert resume.more_epochs(half, 1) == 3  # finishing the current epoch is the first of the n
    with pytest.raises(ck.CheckpointError, match="at least 1, got 0"):
        resume.more_epochs(c, 0)


def test_a_finished_run_without_more_epochs_is_refused_with_what_to_do(tmp_path):
    c = _saved(tmp_path, "finished", RECIPE, epoch=4, step=40, complete=True)
    with pytest.raises(ck.CheckpointError) as e:
        resume.resume_config(c, TrainConfig())
    assert "finished has finished its 4 planned epochs" in str(e.value)
    assert "RE_TRAIN --epochs N trains N more" in str(e.value)
    with pytest.raises(ck.CheckpointError, match="finished its 4 planned epochs"):
        resume.resume_config(c, TrainConfig(), 4)  # a total that is not beyond what is done


def test_resume_takes_the_recipe_from_the_checkpoint_and_run_fields_from_the_caller(tmp_path):
    c = _saved(tmp_path, "recipe", RECIPE, epoch=1, step=10)
    caller = TrainConfig(epochs=1, batch_size=8, optimizer="lars", lr=0.1, seed=0, train_subset=None, warmup_epochs=3,
                         model=ModelConfig(projector="8-8"), loss=LossConfig(), name="new_name", device="cpu",
                         precision="fp32", data="/new/data", checkpoint_dir="/new/dir", compile=True, log_every=3,
                         threads=1, knn_train=10, knn_test=0)
    cfg = resume.resume_config(c, caller)
    for f in resume.RUN_FIELDS:
        assert getattr(cfg, f) == getattr(caller, f), f
    expected = RECIPE.to_dict()
    got = cfg.to_dict()
    for f in set(expected) - set(resume.RUN_FIELDS):
        assert got[f] == expected[f], f
    assert cfg.model.projector == "32-16" and cfg.loss.var_coeff == 0.0 and cfg.augment.view_size == 24


# --- packed demo checkpoints -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_and_packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    cfg = TrainConfig(optimizer="lars", model=ModelConfig(projector="32-16"))
    m, opt = _trained(cfg)
    full = ck.save_checkpoint(str(tmp / "full.safetensors"), m, opt, {"config": cfg.to_dict(), "epoch": 2, "step": 9})
    packed = ck.pack_checkpoint(ck.load_checkpoint(full), str(tmp / "demo.safetensors"), {"command": "train it"})
    return full, packed


def test_pack_keeps_only_the_backbone_in_fp16_in_a_third_of_the_size(full_and_packed):
    full, packed = full_and_packed
    assert os.path.getsize(packed) < os.path.getsize(full) / 3
    c = ck.load_checkpoint(packed)
    assert c.packed and c.meta["packed"] is True and c.meta["command"] == "train it" and c.meta["epoch"] == 2
    assert "optimizer" not in c.meta and c.meta["step_in_epoch"] == 0
    assert all(k.startswith("model.backbone.") for k in c.tensors)
    assert {str(v.dtype) for k, v in c.tensors.items() if not k.endswith("num_batches_tracked")} == {"torch.float16"}
    backbone = {f"model.{k}" for k in VICReg(ModelConfig(projector="32-16")).state_dict() if k.startswith("backbone.")}
    assert set(c.tensors) == backbone
    assert json.load(open(names.sidecar_path(packed)))["packed"] is True


def test_a_packed_checkpoint_embeds_like_the_full_one_within_fp16(full_and_packed):
    from vicreg.core.runtime import make_runtime
    from vicreg.training.embed import load_model
    from vicreg.training.evaluate import extract_features

    full, packed = full_and_packed
    rt = make_runtime("cpu", "fp32", channels_last=False)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    m_full, _, _ = load_model(full, rt)
    m_packed, _, _ = load_model(packed, rt)
    a = extract_features(m_full.backbone, images, rt)
    b = extract_features(m_packed.backbone, images, rt)
    # exactly the full model with its backbone weights rounded to fp16 ...
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in m_full.backbone.state_dict().items()}
    m_full.backbone.load_state_dict(rounded)
    assert torch.allclose(b, extract_features(m_full.backbone, images, rt), rtol=1e-5, atol=1e-6)
    # ... which is within fp16 rounding of the full-precision embedding
    rel = ((a - b).norm(dim=1) / a.norm(dim=1)).max().item()
    assert 0 < rel < 5e-3, rel


def test_a_packed_checkpoint_cannot_resume(full_and_packed, tmp_path):
    import subprocess
    import sys

    _, packed = full_and_packed
    c = ck.load_checkpoint(packed)
    with pytest.raises(ck.CheckpointError, match="packed demo checkpoint"):
        resume.resume_config(c, TrainConfig())
    cfg = c.config
    with pytest.raises(ck.CheckpointError, match="packed demo checkpoint"):
        ck.load_optimizer_state(make_optimizer(VICReg(cfg.model), cfg), c)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "vicreg", "RE_TRAIN", "--model_path", packed, "--epochs", "1"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is a packed demo checkpoint (backbone only, 16-bit), so training cannot resume from it" in r.stderr
