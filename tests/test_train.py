"""Training engine on real CIFAR-10 images: events, stopping, and exact resume."""
import json
import threading

import pytest
import torch

from vicreg.core.config import LossConfig, ModelConfig, TrainConfig
from vicreg.core.health import effective_rank
from vicreg.core.optim import lr_at
from vicreg.core.runtime import make_runtime
from vicreg.runfiles.checkpoint import load_checkpoint
from vicreg.runfiles.events import to_dict
from vicreg.runfiles.resume import more_epochs
from vicreg.training.data import even_subset
from vicreg.training.embed import load_model
from vicreg.training.evaluate import extract_features, knn_accuracy
from vicreg.training.train import train


def _cfg(tmp_path, name, **kw):
    base = dict(epochs=2, batch_size=32, train_subset=128, knn_test=0, checkpoint_dir=str(tmp_path), name=name,
                device="cpu", model=ModelConfig(projector="256-256-256", width=8), seed=1)  # a narrow ResNet-18: fast
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg, data, resume=None, stop_when=None):
    stop = threading.Event()
    events = []
    for ev in train(cfg, stop=stop, resume=resume, data=data):
        events.append(ev)
        if stop_when and stop_when(ev):
            stop.set()
    return events


def _weights(path):
    return load_checkpoint(path).model_state()


@pytest.mark.parametrize("optimizer", ["lars", "adamw"])
def test_one_epoch_plus_resume_equals_two_straight(cifar, tmp_path, optimizer):
    straight = _run(_cfg(tmp_path, "straight", optimizer=optimizer), cifar)
    assert [e.kind for e in straight].count("epoch") == 2 and straight[-1].status == "finished"
    part = _run(_cfg(tmp_path, "part", optimizer=optimizer), cifar, stop_when=lambda e: e.kind == "epoch")
    assert part[-1].status == "stopped" and load_checkpoint(part[-1].checkpoint).meta["epoch"] == 1
    resumed = _run(_cfg(tmp_path, "part", optimizer=optimizer), cifar, resume=part[-1].checkpoint)
    assert resumed[0].start_epoch == 1 and resumed[0].start_step == 4 and resumed[-1].status == "finished"
    a, b = _weights(straight[-1].checkpoint), _weights(resumed[-1].checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k
    # and the losses logged after resuming are the ones the straight run logged
    s_losses = [e.loss for e in straight if e.kind == "step"][4:]
    r_losses = [e.loss for e in resumed if e.kind == "step"]
    assert r_losses == pytest.approx(s_losses, rel=1e-5)
    assert [e.lr for e in resumed if e.kind == "step"] == [e.lr for e in straight if e.kind == "step"][4:]
    m_s, m_r = load_checkpoint(straight[-1].checkpoint).meta, load_checkpoint(resumed[-1].checkpoint).meta
    assert (m_r["epoch"], m_r["step"], m_r["complete"]) == (m_s["epoch"], m_s["step"], m_s["complete"]) == (2, 8, True)


def test_mid_epoch_stop_resumes_exactly(cifar, tmp_path):
    straight = _run(_cfg(tmp_path, "s2", epochs=1, train_subset=192), cifar)
    part = _run(_cfg(tmp_path, "p2", epochs=1, train_subset=192), cifar,
                stop_when=lambda e: e.kind == "step" and e.step == 2)
    assert part[-1].status == "stopped" and load_checkpoint(part[-1].checkpoint).meta["step_in_epoch"] == 2
    resumed = _run(_cfg(tmp_path, "p2", epochs=1, train_subset=192), cifar, resume=part[-1].checkpoint)
    a, b = _weights(straight[-1].checkpoint), _weights(resumed[-1].checkpoint)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k


def test_save_every_skips_the_epochs_between_but_never_the_last_epoch_or_a_stop(cifar, tmp_path):
    every = _run(_cfg(tmp_path, "every", epochs=3), cifar)
    assert [e.checkpoint is not None for e in every if e.kind == "epoch"] == [True, True, True]
    sparse = _run(_cfg(tmp_path, "sparse", epochs=3, save_every=3600), cifar)
    assert [e.checkpoint for e in sparse if e.kind == "epoch"][:2] == [None, None]  # nothing written before the end
    assert sparse[-1].status == "finished" and load_checkpoint(sparse[-1].checkpoint).meta["epoch"] == 3
    a, b = _weights(every[-1].checkpoint), _weights(sparse[-1].checkpoint)  # saving less trains the same
    assert all(torch.equal(a[k], b[k]) for k in a)
    part = _run(_cfg(tmp_path, "sparse_stop", epochs=3, save_every=3600), cifar, stop_when=lambda e: e.kind == "epoch")
    assert part[-1].status == "stopped" and load_checkpoint(part[-1].checkpoint).meta["epoch"] == 1


def test_events_carry_metrics_and_knn(cifar, tmp_path):
    ev = _run(_cfg(tmp_path, "ev", epochs=1, knn_train=200, knn_test=100), cifar)
    start, steps, epochs, end = ev[0], [e for e in ev if e.kind == "step"], [e for e in ev if e.kind == "epoch"], ev[-1]
    assert start.kind == "start" and start.total_steps == 4 and start.n_train == 128
    assert len(steps) == 4 and [s.step for s in steps] == [1, 2, 3, 4]
    for s in steps:
        assert s.loss == pytest.approx(25 * s.invariance + 25 * s.variance + s.covariance, rel=1e-4)
        assert s.pairs_per_s > 0 and 0 < s.emb_std and 1 <= s.eff_rank <= 32
    assert end.status == "finished" and (end.epoch, end.step) == (1, 4)
    # the epoch's kNN figure is the kNN accuracy of the saved weights on the configured subsets,
    # recomputed here independently of the trainer
    rt = make_runtime(start.config["device"], start.config["precision"], start.config["channels_last"])
    model, _, _ = load_model(epochs[0].checkpoint, rt)
    (bank, _), (query, _) = even_subset(cifar.train, 200), even_subset(cifar.test, 100)
    feats = [extract_features(model.backbone, s.images, rt) for s in (bank, query)]
    recomputed = knn_accuracy(feats[0], bank.labels, feats[1], query.labels, 10)
    assert epochs[0].knn_top1 == pytest.approx(recomputed, abs=1e-9)
    assert load_checkpoint(epochs[0].checkpoint).meta["metrics"]["knn_top1"] == epochs[0].knn_top1
    lines = [json.loads(line) for line in open(tmp_path / "ev.metrics.jsonl").read().splitlines()]
    assert lines == [json.loads(json.dumps(to_dict(e))) for e in ev]  # (JSON turns tuples into lists)


def test_failure_ends_with_failed_event(cifar, tmp_path):
    ev = _run(_cfg(tmp_path, "bad", batch_size=1024), cifar)
    assert ev[-1].kind == "end" and ev[-1].status == "failed" and "larger than" in ev[-1].reason
    ev = _run(_cfg(tmp_path, "nan", loss=LossConfig(inv_coeff=float("inf"))), cifar)
    assert ev[-1].status == "failed" and "loss became" in ev[-1].reason and ev[-1].step == 1


def test_n_more_epochs_continue_from_the_checkpoint_step_on_the_stretched_schedule(cifar, tmp_path):
    # 64 images / batch 32 = 2 steps per epoch; warm-up 0.5 epoch = 1 step either way
    cfg = _cfg(tmp_path, "more", epochs=1, train_subset=64, warmup_epochs=0.5, optimizer="adamw")
    first = _run(cfg, cifar)
    assert first[-1].status == "finished"
    ckpt = load_checkpoint(first[-1].checkpoint)
    assert (ckpt.meta["epoch"], ckpt.meta["step"]) == (1, 2)
    total_epochs = more_epochs(ckpt, 2)
    assert total_epochs == 3
    more = _run(_cfg(tmp_path, "more", epochs=total_epochs, train_subset=64), cifar, resume=first[-1].checkpoint)
    start, steps, end = more[0], [e for e in more if e.kind == "step"], more[-1]
    assert (start.start_epoch, start.start_step, start.total_steps, start.epochs) == (1, 2, 6, 3)
    assert start.config["optimizer"] == "adamw" and start.config["warmup_epochs"] == 0.5  # the checkpoint's recipe
    assert [s.step for s in steps] == [3, 4, 5, 6] and [s.epoch for s in steps] == [1, 1, 2, 2]
    peak = cfg.scaled_lr()
    # step k's lr is lr_at(k - 1, ...) on the schedule of the new total (6 steps, warm-up 1)
    assert [s.lr for s in steps] == pytest.approx([lr_at(k - 1, 6, 1, peak, cfg.min_lr_ratio) for k in (3, 4, 5, 6)],
                                                  rel=1e-12)
    # which is not the schedule the first run ended on (it had reached its minimum)
    assert steps[0].lr > 10 * lr_at(2, 2, 1, peak, cfg.min_lr_ratio)
    assert end.status == "finished" and (end.epoch, end.step) == (3, 6)
    meta = load_checkpoint(end.checkpoint).meta
    assert (meta["epoch"], meta["step"], meta["step_in_epoch"], meta["complete"], meta["config"]["epochs"]) == (
        3, 6, 0, True, 3)


def test_effective_rank():
    assert effective_rank(torch.randn(256, 64)) > 50
    collapsed = torch.randn(256, 1) @ torch.randn(1, 64) + 1e-6 * torch.randn(256, 64)
    assert effective_rank(collapsed) < 1.5


def test_collapse_warns_once_and_does_not_stop_the_run():
    from vicreg.core.health import CollapseWatch

    watch = CollapseWatch(min_std=0.02, min_rank=4.0, steps=3)
    healthy = [watch.update(s, 0.3, 40.0) for s in range(1, 4)]
    low = [watch.update(s, 0.001, 30.0) for s in range(4, 9)]  # std collapsed, rank not yet
    assert healthy == [None] * 3 and low[:2] == [None, None] and low[3:] == [None, None]
    assert low[2].startswith("collapse at step 6: for 3 logged steps") and "variance weight" in low[2]
    assert watch.update(9, 0.3, 40.0) is None and watch.low == 0  # recovered: may warn again later
    assert [watch.update(s, 0.3, 1.2) for s in range(10, 13)][-1].startswith("collapse at step 12")


def test_a_collapse_warning_reaches_the_events_once_and_the_run_finishes(cifar, tmp_path, monkeypatch):
    """The plumbing, with a watch that sees every step as collapsed (a real collapse, variance weight 0,
    takes longer than a test should); the watch's own rule is tested above."""
    import vicreg.core.health

    real = vicreg.core.health.CollapseWatch.update
    monkeypatch.setattr(vicreg.core.health.CollapseWatch, "update",
                        lambda self, step, _s, _r: real(self, step, 0.0, 0.0))
    events = _run(_cfg(tmp_path, "collapse", epochs=3, train_subset=256), cifar)
    warned = [e for e in events if e.kind == "step" and e.warning]
    assert events[-1].status == "finished" and [e.step for e in warned] == [20]
    assert warned[0].warning.startswith("collapse at step 20: for 20 logged steps")
