"""Precise BN (vicreg/training/precise_bn.py): a finishing run re-estimates its backbone's BatchNorm statistics
from clean training images; the reference below is written from BatchNorm's own definition."""
import threading

import pytest
import torch

from vicreg.core.augment import normalize
from vicreg.core.config import AugmentConfig, ModelConfig, TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.runtime import make_runtime
from vicreg.runfiles.checkpoint import load_checkpoint
from vicreg.training.data import even_indices, even_subset
from vicreg.training.precise_bn import recalibrate_bn
from vicreg.training.train import train

RT = make_runtime("cpu", "fp32", False, 1)


def _backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return VICReg(ModelConfig(projector="16-16", width=4)).backbone


def test_the_first_batchnorm_holds_the_mean_and_variance_of_the_stem_over_the_images():
    backbone, aug = _backbone(), AugmentConfig()
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    weights = {k: v.clone() for k, v in backbone.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert recalibrate_bn(backbone, images, RT, aug, batch_size=10) == 20  # ResNet-18's BatchNorm layers
    with torch.no_grad():  # the stem's output, batch by batch: BatchNorm's running mean and (unbiased) variance
        stem = [backbone.conv1(normalize(images[i : i + 10].float() / 255.0, aug)) for i in range(0, 40, 10)]
    mean = torch.stack([s.mean((0, 2, 3)) for s in stem]).mean(0)
    var = torch.stack([s.transpose(0, 1).flatten(1).var(1, unbiased=True) for s in stem]).mean(0)
    assert torch.allclose(backbone.bn1.running_mean, mean, atol=1e-5)
    assert torch.allclose(backbone.bn1.running_var, var, rtol=1e-4)
    assert backbone.bn1.momentum == 0.1 and backbone.training  # put back as it was
    for k, v in weights.items():  # the weights are untouched
        assert torch.equal(backbone.state_dict()[k], v), k


def test_the_statistics_do_not_depend_on_where_they_started():
    a, b = _backbone(), _backbone()
    for m in b.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(9.0)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    recalibrate_bn(a, images, RT, AugmentConfig())
    recalibrate_bn(b, images, RT, AugmentConfig())
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_even_indices_spread_over_the_set():
    assert even_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert even_indices(10, 50).tolist() == list(range(10))


def _cfg(tmp_path, name, **kw):
    return TrainConfig(epochs=2, batch_size=32, train_subset=128, knn_test=0, checkpoint_dir=str(tmp_path), name=name,
                       device="cpu", precision="fp32", model=ModelConfig(projector="64-64", width=4), seed=1, **kw)


def test_a_finished_run_keeps_the_same_weights_and_the_statistics_of_clean_images(cifar, tmp_path):
    on = list(train(_cfg(tmp_path, "on", precise_bn=100), data=cifar))
    off = list(train(_cfg(tmp_path, "off", precise_bn=0), data=cifar))
    assert on[-1].status == off[-1].status == "finished"
    a, b = load_checkpoint(on[-1].checkpoint).model_state(), load_checkpoint(off[-1].checkpoint).model_state()
    stats = [k for k in a if k.startswith("backbone.") and ("running_mean" in k or "running_var" in k)]
    assert len(stats) == 40
    for k in a:
        if k not in stats and "num_batches" not in k:
            assert torch.equal(a[k], b[k]), k  # training never read the statistics
    assert all(not torch.allclose(a[k], b[k]) for k in stats)
    # they are the statistics recalibrate_bn gives the unrecalibrated model on 100 of the run's training images
    model = VICReg(ModelConfig(projector="64-64", width=4))
    model.load_state_dict(b)
    recalibrate_bn(model.backbone, even_subset(cifar.train, 128)[0].images, RT, AugmentConfig(), 100)
    for k in stats:
        assert torch.allclose(model.state_dict()[k], a[k], rtol=1e-4, atol=1e-5), k


def test_a_run_stopped_before_its_end_keeps_the_training_statistics(cifar, tmp_path):
    stop, runs = threading.Event(), {}
    for name, n in (("on", 100), ("off", 0)):
        stop.clear()
        events = []
        for ev in train(_cfg(tmp_path, name, precise_bn=n), stop=stop, data=cifar):
            events.append(ev)
            if ev.kind == "epoch":
                stop.set()
        assert events[-1].status == "stopped"
        runs[name] = load_checkpoint(events[-1].checkpoint).model_state()
    for k, v in runs["on"].items():  # stopped after its first epoch of two: nothing re-estimated (yet)
        assert torch.equal(v, runs["off"][k]), k


def test_precise_bn_must_not_be_negative():
    with pytest.raises(ValueError, match="precise_bn must be 0"):
        TrainConfig(precise_bn=-1).validate()
