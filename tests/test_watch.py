"""The learning monitor (vicreg/training/watch.py): its figure is Explore's guess, computed offline the app's way for
the same checkpoint; the untrained start is its first point; it never changes what the run trains."""
import json

import numpy as np
import pytest
import torch

from services.features.neighbours import FeatureIndex, l2_normalize
from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.runtime import make_runtime
from vicreg.training.data import even_subset, load_packed
from vicreg.training.embed import load_model
from vicreg.training.evaluate import extract_features, leave_one_out_guess
from vicreg.training.train import train

WATCH = 60


def explore_share(features: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    """Explore's answer for each bank image (services/features/neighbours.py, that image left out): the share right."""
    index = FeatureIndex("t", l2_normalize(features), labels, np.arange(len(labels)), classes)
    right = []
    for i, (f, y) in enumerate(zip(features, labels, strict=True)):
        q = index.query(f, exclude_test_index=i)
        right.append(max(q.guess, key=q.guess.get) == classes[y])
    return float(np.mean(right))


def test_leave_one_out_guess_is_explores_rule_on_each_bank_image():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 32, generator=g)
    labels = torch.arange(300) % 10
    feats = centres[labels] + 1.5 * torch.randn(300, 32, generator=g)
    ours = leave_one_out_guess(feats, labels, 10, chunk=64)  # chunked: the self-exclusion must follow the chunk
    theirs = explore_share(feats.numpy(), labels.numpy(), [str(c) for c in range(10)])
    assert ours == theirs and 0.3 < ours < 1.0  # noisy clusters: neither hopeless nor trivial


def _cfg(folder, data, **kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 32, "train_subset": 128, "knn_test": 0, "threads": 1,
                          "device": "cpu", "seed": 5, "data": data, "checkpoint_dir": str(folder), "name": "w",
                          "model": ModelConfig(projector="128-128-128"), "watch_images": WATCH, "watch_every": 0.0,
                          **kw})


@pytest.fixture(scope="module", params=[0, 128], ids=["training statistics", "precise BN"])
def watched(tmp_path_factory, packed_cifar, request):
    """A watched run, as trained and with its BatchNorm statistics re-estimated at the end
    (vicreg/training/precise_bn.py): either way the final point is the saved checkpoint's figure."""
    before = torch.get_num_threads()
    cfg = _cfg(tmp_path_factory.mktemp("watch"), packed_cifar, precise_bn=request.param)
    events = list(train(cfg))
    torch.set_num_threads(before)
    assert events[-1].status == "finished"
    return cfg, events


def test_the_run_starts_with_its_untrained_figure_and_ends_with_its_final_one(watched, packed_cifar):
    cfg, events = watched
    kinds = [e.kind for e in events]
    points = [e for e in events if e.kind == "watch"]
    assert kinds[:2] == ["start", "watch"] and kinds[-2:] == ["watch", "end"]
    assert [p.step for p in points] == [0, events[-1].step] and all(p.images == WATCH for p in points)
    # the untrained figure is the run's first weights, scored offline the app's way
    data = load_packed(packed_cifar)
    sub, _ = even_subset(data.test, WATCH)
    rt = make_runtime("cpu", threads=1)
    torch.manual_seed(cfg.seed)
    first = VICReg(cfg.model).to(memory_format=torch.channels_last)
    feats = extract_features(first.backbone, sub.images, rt).numpy()
    assert points[0].guess == explore_share(feats, sub.labels.numpy(), list(data.classes))
    assert points[0].features.shape == (WATCH, 512) and points[0].features.dtype == np.float16
    assert list(points[0].labels) == sub.labels.tolist() and points[0].classes == list(data.classes)


def test_the_final_figure_equals_the_offline_one_for_the_saved_checkpoint(watched, packed_cifar):
    cfg, events = watched
    last = [e for e in events if e.kind == "watch"][-1]
    data = load_packed(packed_cifar)
    sub, _ = even_subset(data.test, WATCH)
    rt = make_runtime("cpu", threads=1)
    model, _, _ = load_model(events[-1].checkpoint, rt)
    feats = extract_features(model.backbone, sub.images, rt).numpy()
    assert last.guess == explore_share(feats, sub.labels.numpy(), list(data.classes))


def test_the_metrics_file_keeps_the_figures_but_not_the_features(watched):
    cfg, _ = watched
    with open(f"{cfg.checkpoint_dir}/{cfg.name}.metrics.jsonl") as f:
        lines = [json.loads(line) for line in f if '"kind": "watch"' in line]
    assert len(lines) == 2 and all("features" not in d and "labels" not in d for d in lines)
    assert lines[0]["step"] == 0 and 0 <= lines[0]["guess"] <= 1


def test_a_stop_during_setup_skips_the_untrained_figure(tmp_path, packed_cifar):
    """Stop pressed right after Start: the run saves at step 0 without first spending seconds measuring the untrained
    model (the next run that trains from step 0 measures it)."""
    import threading

    stop = threading.Event()
    stop.set()
    before = torch.get_num_threads()
    events = list(train(_cfg(tmp_path, packed_cifar, knn_test=50), stop=stop))
    torch.set_num_threads(before)
    assert [e.kind for e in events] == ["start", "end"]
    assert (events[-1].status, events[-1].step, events[-1].reason) == ("stopped", 0, "stopped at epoch 1, step 0/4")


def test_watching_changes_nothing_the_run_trains(tmp_path, packed_cifar, monkeypatch):
    """A measurement after every step (eval mode, folded copy, no random numbers) leaves the weights as without."""
    monkeypatch.setattr("vicreg.training.watch.SHARE", 1.0)  # no spacing for the monitor's own cost: every step
    before = torch.get_num_threads()
    for name, images in (("with", WATCH), ("without", 0)):
        cfg = _cfg(tmp_path, packed_cifar, name=name, watch_images=images, watch_every=1e-9, train_subset=96)
        events = list(train(cfg))
        assert events[-1].status == "finished"
        watches = [e for e in events if e.kind == "watch"]
        assert len(watches) == (1 + 3 if images else 0)  # the start and each of the 3 steps
    torch.set_num_threads(before)
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("with", "without"))
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)


def test_a_run_that_re_estimates_its_statistics_measures_its_last_step_again(tmp_path, packed_cifar, monkeypatch):
    """Measured after every step, the last step included; re-estimating the statistics afterwards changes the
    figure, so the run measures once more: the point it ends with is the saved checkpoint's."""
    monkeypatch.setattr("vicreg.training.watch.SHARE", 1.0)
    before = torch.get_num_threads()
    for name, precise in (("plain", 0), ("precise", 96)):
        cfg = _cfg(tmp_path, packed_cifar, name=name, watch_every=1e-9, train_subset=96, precise_bn=precise,
                   model=ModelConfig(projector="64-64", width=8))  # a narrow ResNet-18: what is tested is the order
        events = list(train(cfg))
        assert events[-1].status == "finished"
        steps = [e.step for e in events if e.kind == "watch"]
        assert steps == [0, 1, 2, 3] + ([3] if precise else [])
    torch.set_num_threads(before)


def test_bad_monitor_settings_say_what_is_wrong():
    with pytest.raises(ValueError, match="watch_images must be 0"):
        TrainConfig(watch_images=1).validate()
    with pytest.raises(ValueError, match="watch_every"):
        TrainConfig(watch_every=-1).validate()


def test_a_time_budget_sizes_the_epochs_and_leaves_no_trace(tmp_path, packed_cifar):
    """Timing steps on throwaway state, then training the fitted epochs, equals training them from the start."""
    from safetensors.torch import load_file

    from vicreg.runfiles.checkpoint import read_meta
    from vicreg.training.budget import fitted_epochs

    assert [fitted_epochs(120, 1.0, 30), fitted_epochs(120, 0.1, 30), fitted_epochs(5, 2.0, 30)] == [4, 40, 1]
    # whole epochs that fit, never one that ends past the budget; the monitor's tenth counted when it watches
    assert [fitted_epochs(120, 1.3, 31), fitted_epochs(120, 1.0, 30, share=0.1)] == [2, 3]
    before = torch.get_num_threads()
    narrow = ModelConfig(projector="128-128-128", width=8)  # what is checked is the bookkeeping, at any width
    timed = list(train(_cfg(tmp_path, packed_cifar, name="timed", budget_s=1e-6, watch_images=0, train_subset=96,
                            model=narrow)))
    assert timed[-1].status == "finished"
    assert "1 epoch fits the 1e-06-second budget here" in " ".join(timed[0].notes) and timed[0].epochs == 1
    meta = read_meta(str(tmp_path / "timed.safetensors"))
    assert meta["config"]["epochs"] == 1 and meta["config"]["budget_s"] == 1e-6
    plain = list(train(_cfg(tmp_path, packed_cifar, name="plain", epochs=1, watch_images=0, train_subset=96,
                            model=narrow)))
    torch.set_num_threads(before)
    assert plain[-1].status == "finished"
    a, b = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("timed", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_epochs_given_on_the_command_line_turn_a_presets_budget_off():
    from vicreg.orchestration.cli import build_parser, train_config

    args = build_parser().parse_args(["TRAIN", "--preset", "quick_demo", "--epochs", "5"])
    cfg = train_config(args)
    assert cfg.epochs == 5 and cfg.budget_s == 0
    assert train_config(build_parser().parse_args(["TRAIN", "--preset", "quick_demo"])).budget_s > 0


def test_on_a_slow_cpu_the_first_point_keeps_an_evenly_spaced_part_of_the_set():
    """A budgeted run knows its planned time: when a point of the whole set costs more than a twentieth of it,
    the set is cut (the first measurement re-scored on the part kept, nothing embedded again), never below
    FEWEST images; when it costs less, the set stays whole."""
    from vicreg.core.config import AugmentConfig
    from vicreg.training.data import Split
    from vicreg.training.watch import FEWEST, Watch

    def watch() -> Watch:
        w = Watch(Split(torch.zeros(300, 3, 4, 4, dtype=torch.uint8), torch.arange(300) % 10), 300, 15.0,
                  AugmentConfig())
        w.planned_s = 100.0
        return w

    feats = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    w = watch()
    kept, share = w._fit(feats, seconds=10.0)  # 10 s a point; 100 s planned allows 5 s: half the set
    pick = torch.linspace(0, 299, 150).long()
    assert len(kept) == len(w.labels) == len(w.indices) == len(w.split) == 150 and share == 0.5
    assert torch.equal(kept, feats[pick]) and w.labels.tolist() == (pick % 10).tolist()
    assert w._fit(feats[pick], seconds=1.0)[1] == 1.0  # cheap enough now: nothing more is cut
    w = watch()
    assert len(w._fit(feats, seconds=1000.0)[0]) == FEWEST
    w = watch()
    assert w._fit(feats, seconds=4.0) == (feats, 1.0) and len(w.labels) == 300
