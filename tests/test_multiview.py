"""Multi-view VICReg (augment.views > 2): config, augmentation, model, exact resume, the app's views."""
import threading

import numpy as np
import pytest
import torch

from vicreg.core.augment import augment, n_views, normalize, two_views
from vicreg.core.config import AugmentConfig, ModelConfig, TrainConfig
from vicreg.core.distributed import Dist
from vicreg.core.loss import multiview_loss, vicreg_loss
from vicreg.core.model import VICReg
from vicreg.core.presets import PRESETS
from vicreg.orchestration.cli import build_parser, train_config
from vicreg.runfiles.checkpoint import load_checkpoint
from vicreg.runfiles.resume import resume_config
from vicreg.runfiles.streams import epoch_order, start_epoch_stream
from vicreg.training.data import even_subset
from vicreg.training.train import train

MULTI = dict(views=4, view_size=16, scale=(0.2, 0.6))


def _cfg(tmp_path, name, **kw):
    base = dict(epochs=2, batch_size=32, train_subset=96, knn_test=0, checkpoint_dir=str(tmp_path), name=name,
                device="cpu", precision="fp32", threads=1, model=ModelConfig(projector="64-64"), seed=2,
                optimizer="adamw", augment=AugmentConfig(**MULTI))
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg, data, resume=None, stop_when=None):
    stop, events = threading.Event(), []
    for ev in train(cfg, stop=stop, resume=resume, data=data):
        events.append(ev)
        if stop_when and stop_when(ev):
            stop.set()
    return events


def _assert_same_state(path_a, path_b):
    a, b = load_checkpoint(path_a).tensors, load_checkpoint(path_b).tensors
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_views_default_to_two_and_are_checked():
    assert AugmentConfig().views == 2 and TrainConfig().augment.views == 2
    assert train_config(build_parser().parse_args(["TRAIN"])).augment.views == 2  # the CLI's TRAIN, no preset
    old = TrainConfig().to_dict()
    del old["augment"]["views"]  # a checkpoint written before the field existed
    assert TrainConfig.from_dict(old).augment.views == 2
    for bad in (1, 0, 33):
        with pytest.raises(ValueError, match="augment.views must be between 2 and 32"):
            TrainConfig(augment=AugmentConfig(views=bad)).validate()
    assert TrainConfig().with_values({"augment.views": 6.0}).augment.views == 6


@pytest.mark.parametrize("preset", ["cpu150", "cpu120"])
def test_the_multiview_presets_are_valid_and_multiview(preset):
    cfg = TrainConfig.from_preset(preset).validate()
    assert cfg.augment.views > 2 and 0 < cfg.augment.view_size < cfg.augment.size
    assert (cfg.loss.inv_coeff, cfg.loss.var_coeff, cfg.loss.cov_coeff) == (25.0, 25.0, 1.0)
    assert all(p.get("augment", {}).get("views", 2) == 2 for k, p in PRESETS.items() if k not in ("cpu150", "cpu120"))


def test_n_views_start_with_two_views_pair_and_draw_independent_views():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    cfg = AugmentConfig(**MULTI)
    pair = two_views(x, cfg, torch.Generator().manual_seed(3))
    views = n_views(x, cfg, torch.Generator().manual_seed(3))
    assert len(views) == 4 and all(v.shape == (8, 3, 16, 16) for v in views)
    assert torch.equal(views[0], pair[0]) and torch.equal(views[1], pair[1])
    assert all(not torch.equal(views[i], views[j]) for i in range(4) for j in range(i + 1, 4))
    # two_views' stream is the one it always drew: view by view, augment() then normalize()
    g = torch.Generator().manual_seed(3)
    assert torch.equal(pair[0], normalize(augment(x, cfg, g, 16)[0], cfg))
    assert torch.equal(pair[1], normalize(augment(x, cfg, g, 16)[0], cfg))


def test_the_model_keeps_the_two_view_loss_for_two_views_and_takes_more():
    torch.manual_seed(0)
    model = VICReg(ModelConfig(projector="32-16")).train()
    x = [torch.randn(8, 3, 16, 16) for _ in range(4)]
    terms, z_a, z_b = model(x[0], x[1])
    for got, want in zip(terms, vicreg_loss(z_a, z_b), strict=True):
        assert torch.equal(got, want)
    terms, *zs = model(*x, loss_kwargs=dict(inv_coeff=2.0))
    assert len(zs) == 4 and all(z.shape == (8, 16) for z in zs)
    for got, want in zip(terms, multiview_loss(zs, inv_coeff=2.0), strict=True):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="at least 2 views"):
        model(x[0])


def test_two_views_train_on_the_two_view_stream_and_loss(cifar, tmp_path):
    """The trainer's first logged loss at views=2 is the two-view loss of two_views' pair of the first batch,
    computed here from the same seeds: the pair and the loss every two-view run has always drawn."""
    cfg = _cfg(tmp_path, "pair", epochs=1, augment=AugmentConfig(), channels_last=False)
    first = next(e for e in _run(cfg, cifar) if e.kind == "step")
    torch.manual_seed(cfg.seed)
    model = VICReg(cfg.model).train()
    images = even_subset(cifar.train, cfg.train_subset)[0].images
    batch = images[epoch_order(images.shape[0], cfg.seed, 0)[: cfg.batch_size]]
    gen = torch.Generator()
    start_epoch_stream(gen, cfg.seed, 0, Dist())
    terms, _, _ = model(*two_views(batch, cfg.augment, gen))
    assert first.loss == terms.total.item() and first.invariance == terms.invariance.item()


def test_multiview_one_plus_one_epochs_equal_two_straight(cifar, tmp_path):
    straight = _run(_cfg(tmp_path, "straight"), cifar)
    assert straight[-1].status == "finished" and "4 views of each image, 16 px" in straight[0].notes
    # TRAIN stopped after its first epoch, then RE_TRAIN finishing the planned run (its schedule is the straight
    # run's); asking for other views there keeps the checkpoint's: views are part of the recipe
    part = _run(_cfg(tmp_path, "part"), cifar, stop_when=lambda e: e.kind == "epoch")
    assert part[-1].status == "stopped" and load_checkpoint(part[-1].checkpoint).meta["epoch"] == 1
    resumed = _run(_cfg(tmp_path, "part", augment=AugmentConfig(views=2)), cifar, resume=part[-1].checkpoint)
    assert resumed[0].start_step == 3 and resumed[-1].status == "finished"
    assert resumed[0].config["augment"]["views"] == 4
    _assert_same_state(straight[-1].checkpoint, resumed[-1].checkpoint)
    s_losses = [e.loss for e in straight if e.kind == "step"][3:]
    assert [e.loss for e in resumed if e.kind == "step"] == s_losses
    meta = load_checkpoint(resumed[-1].checkpoint).meta
    assert meta["config"]["augment"]["views"] == 4 and meta["config"]["augment"]["view_size"] == 16


def test_multiview_mid_epoch_stop_resumes_exactly(cifar, tmp_path):
    straight = _run(_cfg(tmp_path, "s", epochs=1), cifar)
    part = _run(_cfg(tmp_path, "p", epochs=1), cifar, stop_when=lambda e: e.kind == "step" and e.step == 1)
    assert part[-1].status == "stopped" and load_checkpoint(part[-1].checkpoint).meta["step_in_epoch"] == 1
    resumed = _run(_cfg(tmp_path, "p", epochs=1), cifar, resume=part[-1].checkpoint)
    _assert_same_state(straight[-1].checkpoint, resumed[-1].checkpoint)


def test_resume_config_takes_views_from_the_checkpoint(cifar, tmp_path):
    done = _run(_cfg(tmp_path, "rc", epochs=1, train_subset=32), cifar)
    ckpt = load_checkpoint(done[-1].checkpoint)
    cfg = resume_config(ckpt, TrainConfig(augment=AugmentConfig(views=8, view_size=8)), 2)
    assert (cfg.augment.views, cfg.augment.view_size, cfg.augment.scale) == (4, 16, (0.2, 0.6))


def test_the_app_shows_a_multiview_checkpoints_small_views(cifar, tmp_path):
    from services.features.models import ModelCache
    from services.features.views import training_views

    pixels = cifar.test.images[0].numpy()
    imgs, params = training_views(pixels, AugmentConfig(**MULTI), seed=4)
    assert len(imgs) == len(params) == 4 and all(i.shape == (16, 16, 3) and i.dtype == np.uint8 for i in imgs)
    assert all(0.2 - 1e-6 <= p["crop_area"] <= 0.6 + 1e-3 for p in params)
    again, _ = training_views(pixels, AugmentConfig(**MULTI), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, again, strict=True))
    done = _run(_cfg(tmp_path, "app", epochs=1, train_subset=32), cifar)
    cache = ModelCache(device="cpu", precision="fp32", threads=1)
    views, shown = cache.views(pixels, done[-1].checkpoint, 4)
    assert len(views) == 4 and views[0].shape == (16, 16, 3) and shown == params
    pair, _ = cache.views(pixels, None, 4)  # no checkpoint: the default pair, full size
    assert len(pair) == 2 and pair[0].shape == (32, 32, 3)


def test_the_recipe_search_reads_multiview_candidates():
    from bench.recipe_search import parse_run, plan, table

    base = TrainConfig(data="d", checkpoint_dir="runs/search", knn_test=0, threads=1, epochs=1, name="search")
    cfg, images = parse_run("preset=cpu90,augment.views=6,augment.view_size=16,augment.scale=0.1:0.5,images=900", base)
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.name, cfg.data, cfg.knn_test, images) == (
        "adamw", 2e-3, 1, "search", "d", 0, 900)
    assert (cfg.augment.views, cfg.augment.view_size, cfg.augment.scale) == (6, 16, (0.1, 0.5))
    assert parse_run("batch_size=32,pairs=64", base)[0].augment.views == 2
    with pytest.raises(ValueError, match="augment.views must be"):
        parse_run("augment.views=1", base)
    planned = plan(cfg, 120_000, 50_000)
    assert (planned.epochs, planned.train_subset) == (3, 40_000)
    row = {"run": "r", "views": 6, "view_px": 16, "images": 64, "views_seen": 384, "train_min": 0.5, "linear": 0.25,
           "knn": 0.125, "eff_rank": 3.0}
    assert table([row]).splitlines()[-1] == "| `r` | 6 | 16 | 64 | 384 | 0.50 | 25.00 % | 12.50 % | 3.0 |"


def test_progressive_view_sides_split_the_run_into_equal_parts():
    prog = AugmentConfig(view_sizes="16-24-32")
    assert [prog.view_side(e, 6) for e in range(6)] == [16, 16, 24, 24, 32, 32]
    assert [prog.view_side(e, 7) for e in range(7)] == [16, 16, 16, 24, 24, 32, 32]
    assert [prog.view_side(e, 2) for e in range(2)] == [16, 24]  # fewer epochs than sides: the last never comes
    assert prog.view_side() == 32 and AugmentConfig(view_size=24).view_side(0, 5) == 24 == AugmentConfig(
        view_size=24).view_side()  # no schedule: view_size throughout
    assert AugmentConfig().view_side(3, 4) == 32
    for bad in ("16-40", "a-b", "16--32", "0-32"):
        with pytest.raises(ValueError, match="augment.view_sizes must be view sides from 1 to 32 joined by '-'"):
            TrainConfig(augment=AugmentConfig(view_sizes=bad)).validate()
    args = build_parser().parse_args(["TRAIN", "--view_sizes", "16-32", "--crop_scale", "0.3:0.9"])
    assert (train_config(args).augment.view_sizes, train_config(args).augment.scale) == ("16-32", (0.3, 0.9))


def test_progressive_resizing_trains_each_part_at_its_side_and_resumes_exactly(cifar, tmp_path, monkeypatch):
    import vicreg.training.run as train_module

    sides = []
    real = train_module.n_views
    monkeypatch.setattr(train_module, "n_views", lambda *a, **kw: sides.append(kw["size"]) or real(*a, **kw))
    prog = AugmentConfig(views=2, view_sizes="16-32")
    straight = _run(_cfg(tmp_path, "ps", augment=prog), cifar)
    assert sides == [16] * 3 + [32] * 3 and "view sides 16 → 32 px over equal parts of the run" in straight[0].notes
    part = _run(_cfg(tmp_path, "pp", augment=prog), cifar, stop_when=lambda e: e.kind == "epoch")
    resumed = _run(_cfg(tmp_path, "pp", augment=prog), cifar, resume=part[-1].checkpoint)
    assert resumed[-1].status == "finished" and sides[6:] == [16] * 3 + [32] * 3
    _assert_same_state(straight[-1].checkpoint, resumed[-1].checkpoint)


def test_full_views_draw_the_large_views_first_then_the_small_ones(cifar, tmp_path):
    """augment.full_views (multi-crop): the first views at the images' own size, the rest at view_size, drawn one
    after another from the same stream; from the CLI, in Explore, in a run's notes and in its checkpoint."""
    from services.access import Access
    from services.features.views import training_views

    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    cfg = AugmentConfig(views=6, full_views=2, view_size=16)
    views = n_views(x, cfg, torch.Generator().manual_seed(3))
    assert [v.shape[-1] for v in views] == [32, 32, 16, 16, 16, 16]
    g = torch.Generator().manual_seed(3)
    for view, side in zip(views[:3], (32, 32, 16), strict=True):
        assert torch.equal(view, normalize(augment(x, cfg, g, side)[0], cfg))
    old = TrainConfig().to_dict()
    del old["augment"]["full_views"]  # a checkpoint written before the field existed: every view at view_size
    assert TrainConfig.from_dict(old).augment.full_views == 0
    with pytest.raises(ValueError, match=r"augment.full_views must be between 0 and views \(4\), got 5"):
        TrainConfig(augment=AugmentConfig(views=4, full_views=5)).validate()
    cli = train_config(build_parser().parse_args(["TRAIN", "--views", "6", "--full_views", "2", "--view_size", "16"]))
    assert (cli.augment.views, cli.augment.full_views, cli.augment.view_size) == (6, 2, 16)
    assert "full-size views at most 0 (asked 2)" in Access().visitor_run_error(cli)
    imgs, params = training_views(x[0].numpy(), cfg, seed=1)
    assert [i.shape[0] for i in imgs] == [32, 32, 16, 16, 16, 16] and len(params) == 6
    mixed = AugmentConfig(views=3, full_views=1, view_size=16)
    done = _run(_cfg(tmp_path, "mixed", epochs=1, train_subset=64, augment=mixed), cifar)
    assert done[-1].status == "finished" and "3 views of each image, 1 at 32 px, 2 at 16 px" in done[0].notes
    assert load_checkpoint(done[-1].checkpoint).meta["config"]["augment"]["full_views"] == 1
