"""The GPU path's correctness, shown on the CPU where the fault can be shown there, plus GPU variants
that skip without CUDA: per-step constants, optimiser state layout and flags on resume, the
augmentation stream across device kinds, TF32, the bf16 check, and the effective rank."""
import threading

import pytest
import torch

import vicreg.core.runtime as runtime
from vicreg.core.augment import channel_constant, two_views
from vicreg.core.config import AugmentConfig, ModelConfig, TrainConfig
from vicreg.core.health import effective_rank
from vicreg.core.model import VICReg
from vicreg.core.optim import make_optimizer
from vicreg.runfiles.checkpoint import _write, load_checkpoint, load_optimizer_state, save_checkpoint
from vicreg.training.train import train

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_augmentation_builds_no_tensors_from_host_values_after_the_first_step(monkeypatch):
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    two_views(images, AugmentConfig(), g)  # builds and caches the constants
    calls = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: calls.append(a) or real(*a, **k))
    two_views(images, AugmentConfig(), g)
    assert calls == []  # each would be a host -> device copy (a sync) on a GPU
    c = channel_constant((1.0, 2.0, 3.0), torch.device("cpu"), torch.float32)
    assert c.shape == (1, 3, 1, 1) and c is channel_constant((1.0, 2.0, 3.0), torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("capability, expected", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_needs_compute_capability_8(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_a, **_k: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_a, **_k: True)  # counts emulated bf16: not used
    assert runtime.bf16_supported(torch.device("cuda")) is expected


def test_a_cuda_runtime_leaves_tf32_off(monkeypatch):
    monkeypatch.setattr(runtime, "resolve_device", lambda *_a, **_k: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_a, **_k: (9, 0))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    rt = runtime.make_runtime("cuda")
    assert rt.bf16 and (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert torch.backends.cuda.matmul.allow_tf32 is False


def _rank_by_svd(z):
    s = torch.linalg.svdvals((z - z.mean(0)).double())
    p = s / s.sum()
    return float(torch.exp(-(p * (p + 1e-12).log()).sum()))


@pytest.mark.parametrize("shape", [(64, 512), (256, 32)])
def test_effective_rank_from_the_gram_matrix_equals_the_svd_one(shape):
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) @ torch.diag(torch.linspace(0.1, 2, shape[1]))
    r = effective_rank(z)
    assert r.ndim == 0 and float(r) == pytest.approx(_rank_by_svd(z), rel=1e-4)
    collapsed = torch.randn(128, 1).expand(128, 64) + 1e-6 * torch.randn(128, 64)
    assert float(effective_rank(collapsed)) < 1.5


def _opt_pair(foreach_saved: bool, foreach_live: bool, tmp_path):
    cfg = TrainConfig(optimizer="adamw", model=ModelConfig(projector="64-64"))
    torch.manual_seed(0)
    model = VICReg(cfg.model).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    for g in opt.param_groups:
        g["foreach"] = foreach_saved
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    terms, _, _ = model(x, x.flip(3))
    terms.total.backward()
    opt.step()
    meta = {"config": cfg.to_dict(), "epoch": 0, "step": 1}
    path = save_checkpoint(str(tmp_path / "o.safetensors"), model, opt, meta)
    fresh = VICReg(cfg.model).to(memory_format=torch.channels_last)
    opt2 = make_optimizer(fresh, cfg)
    for g in opt2.param_groups:
        g["foreach"] = foreach_live
    load_optimizer_state(opt2, load_checkpoint(path))
    return opt, opt2


def test_resumed_optimiser_state_has_its_parameters_layout_and_the_live_flags(tmp_path):
    saved, live = _opt_pair(foreach_saved=False, foreach_live=True, tmp_path=tmp_path)
    convs = [p for p in live.param_groups[0]["params"] if p.ndim == 4 and p.shape[-1] > 1]  # 1x1: same strides
    assert convs and all(not p.is_contiguous() for p in convs)  # channels-last weights
    for p in convs:
        for key in ("exp_avg", "exp_avg_sq"):
            assert live.state[p][key].stride() == p.stride(), key
    assert all(g["foreach"] is True for g in live.param_groups)  # not the saved False
    for p_old, p_new in zip(saved.param_groups[0]["params"], live.param_groups[0]["params"], strict=True):
        assert torch.equal(saved.state[p_old]["exp_avg"], live.state[p_new]["exp_avg"])  # same values


def _mid_epoch(tmp_path, data, name):
    cfg = TrainConfig(epochs=1, batch_size=32, train_subset=128, knn_test=0, device="cpu", seed=2, name=name,
                      checkpoint_dir=str(tmp_path), model=ModelConfig(projector="64-64"))
    stop = threading.Event()
    for ev in train(cfg, stop=stop, data=data):
        if ev.kind == "step" and ev.step == 2:
            stop.set()
    return cfg, ev.checkpoint


def test_a_mid_epoch_checkpoint_from_another_device_kind_reseeds_deterministically(tmp_path, cifar):
    cfg, path = _mid_epoch(tmp_path, cifar, "moved")
    ck = load_checkpoint(path)
    assert ck.meta["rng_device"] == "cpu" and ck.meta["step_in_epoch"] == 2
    _write(path, ck.tensors, {**ck.meta, "rng_device": "cuda"})  # as if saved on a GPU
    finals = []
    for i in range(2):
        c = TrainConfig.from_dict({**cfg.to_dict(), "name": f"resumed{i}"})
        events = list(train(c, resume=path, data=cifar))
        assert events[-1].status == "finished", events[-1]
        assert len(events[0].notes) == 1 and "reseeded" in events[0].notes[0]
        finals.append(load_checkpoint(events[-1].checkpoint).model_state())
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


@CUDA
def test_gpu_one_epoch_plus_resume_matches_two_straight(tmp_path, cifar):
    """On a GPU: bf16, cuDNN autotuning and atomics make runs differ in the last bits, hence the
    looser tolerance than the CPU test's rtol 1e-5."""
    kw = dict(epochs=2, batch_size=32, train_subset=128, knn_test=0, device="cuda", seed=1, log_every=1,
              checkpoint_dir=str(tmp_path), model=ModelConfig(projector="256-256-256"), optimizer="adamw")
    straight = list(train(TrainConfig(name="s", **kw), data=cifar))
    stop = threading.Event()
    for ev in train(TrainConfig(name="p", **kw), stop=stop, data=cifar):
        if ev.kind == "epoch":
            stop.set()
    resumed = list(train(TrainConfig(name="p", **kw), resume=ev.checkpoint, data=cifar))
    a, b = (load_checkpoint(e[-1].checkpoint).model_state() for e in (straight, resumed))
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=2e-2, atol=2e-3), k
