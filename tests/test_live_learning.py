"""What a visitor watches in the Train tab: the untrained baseline and a reference run on the charts, the live
map of the monitor's images (services/features/live_map.py), and a ZeroGPU quota that ends a run cleanly."""
import os
import sys
import threading
import time
import types

import numpy as np
import pytest

from services import gpu
from services.features.live_map import LiveMap, align, layout
from services.reference import Reference, preset_of, reference_for, shipped
from ui import charts
from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.core.presets import QUICK
from vicreg.orchestration.chunks import ChunkPlan, run_chunk, run_chunked
from vicreg.orchestration.jobs import JobSnapshot
from vicreg.runfiles.events import StepEvent, WatchEvent


def clusters(n: int = 300, spread: float = 2.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    return rng.normal(size=(10, 64))[labels] * 3 + spread * rng.normal(size=(n, 64)), labels


def within_share(coords: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance between points of one class over the mean distance between any two: low when classes part."""
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    return float(d[labels[:, None] == labels[None]].mean() / d.mean())


def test_the_map_parts_classes_that_the_features_part():
    x, y = clusters()
    assert within_share(layout(x), y) < 0.35
    noise, _ = clusters(spread=50.0)  # features that say nothing of the class
    assert within_share(layout(noise), y) > 0.8


def test_a_refresh_is_aligned_to_the_previous_map():
    x, _ = clusters()
    first = layout(x)
    rng = np.random.default_rng(1)
    turned = first @ np.array([[0.0, -1.0], [1.0, 0.0]]) * 3 + 40  # the same map, turned, scaled and moved
    assert np.allclose(align(turned, first), first, atol=1e-3)
    again = layout(x + 0.05 * rng.normal(size=x.shape), first)  # slightly different features: points move a little
    size = np.abs(first - first.mean(0)).mean()
    assert np.abs(again - first).mean() < 0.25 * size


def test_the_live_map_draws_each_new_point_in_a_child_process(tmp_path):
    x, y = clusters(120)
    live = LiveMap(str(tmp_path / "map"))
    classes = [str(c) for c in range(10)]
    for step, feats in ((0, x), (5, x + 0.1)):
        live.offer(1, WatchEvent(0, step, 0.5, 120, 0.1, 1.0, 1.0, features=feats.astype(np.float16), labels=y,
                                 classes=classes))
        t0 = time.time()
        while (live.latest(1) is None or live.latest(1).step != step) and time.time() - t0 < 60:
            time.sleep(0.1)
    state = live.latest(1)
    assert state is not None and state.step == 5 and state.count == 2 and state.coords.shape == (120, 2)
    assert live.latest(2) is None  # another run's map is not this one's
    fig = charts.live_map_figure(state, 120)
    assert [t.name for t in fig.data] == classes and "map 2 (step 5)" in fig.layout.title.text


def _watch(step: int, guess: float) -> WatchEvent:
    return WatchEvent(0, step, guess, 400, 0.1, 1.0, 1.0)


def _step(step: int, loss: float) -> StepEvent:
    return StepEvent(0, step, 10, loss, 0.1, 0.5, 0.2, 0.1, 10.0, 0.3, 20.0, 1.0)


def test_the_accuracy_chart_shows_the_untrained_start_and_the_reference_behind():
    ref = Reference("the previous run (a)", [_step(1, 30.0)], [], [_watch(0, 0.30), _watch(10, 0.36)])
    fig = charts.accuracy_figure([_watch(0, 0.33), _watch(4, 0.38), _watch(8, 0.41)], [], ref)
    assert [t.name for t in fig.data][0] == "reference"  # drawn first: behind the live curve
    assert fig.data[0].line.color == charts.REFERENCE and list(fig.data[0].y) == [30.0, 36.0]
    assert list(fig.data[1].x) == [0, 4, 8] and list(fig.data[1].y) == pytest.approx([33.0, 38.0, 41.0])
    baselines = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert [s.y0 for s in baselines] == pytest.approx([33.0])
    assert any(a.text == "untrained 33.0 %" for a in fig.layout.annotations)
    loss = charts.loss_figure([_step(1, 25.0)], ref)
    assert [t.name for t in loss.data][:4] == ["reference"] * 4 and loss.data[4].name == "loss"


def test_the_reference_is_the_previous_run_else_a_shipped_run_of_the_preset(tmp_path):
    cfg = TrainConfig.from_preset(QUICK, name="visitor-x", threads=1).to_dict()
    from vicreg.runfiles.events import StartEvent

    start = StartEvent("visitor-x", "cpu", 0, 0, 3, 31, 93, 2000, None, cfg)
    previous = JobSnapshot(1, "finished", start, [_step(1, 28.0)])
    assert reference_for(JobSnapshot(2, "running", start, previous=previous)).label == "the previous run (visitor-x)"
    assert preset_of(cfg) == QUICK and preset_of({**cfg, "batch_size": 32}) is None
    assert preset_of({**cfg, "epochs": 2}) == QUICK  # the epochs its time budget fitted on this CPU
    folder = tmp_path / "ref"
    folder.mkdir()
    assert reference_for(JobSnapshot(2, "running", start), str(folder)) is None  # nothing shipped here
    (folder / f"{QUICK}.metrics.jsonl").write_text(
        '{"kind": "step", "epoch": 0, "step": 1, "total_steps": 9, "loss": 30.0, "invariance": 0.1, "variance": 0.9, '
        '"covariance": 0.1, "lr": 0.1, "pairs_per_s": 9.0, "emb_std": 0.3, "eff_rank": 20.0, "elapsed": 1.0}\n'
        '{"kind": "watch", "epoch": 0, "step": 0, "guess": 0.33, "images": 400, "seconds": 1.0, '
        '"train_seconds": 0.0, "elapsed": 1.0}\n')
    ref = reference_for(JobSnapshot(2, "running", start), str(folder))
    assert ref.label == f"a finished {QUICK} run" and ref.watches[0].guess == 0.33 and ref.steps[0].loss == 30.0
    assert shipped("cpu150", str(folder)) is None



def test_a_shipped_file_of_two_runs_is_drawn_as_its_last_run(tmp_path):
    """A metrics file appends every run of its name: the grey curve is the last fresh run, not both joined."""
    def start(step: int) -> str:
        return ('{"kind": "start", "run": "r", "runtime": "cpu", "start_epoch": 0, "start_step": %d, "epochs": 1, '
                '"steps_per_epoch": 9, "total_steps": 9, "n_train": 9, "resumed_from": null, "config": {}}\n' % step)

    def watch(step: int, guess: float) -> str:
        return ('{"kind": "watch", "epoch": 0, "step": %d, "guess": %s, "images": 9, "seconds": 1.0, '
                '"train_seconds": 0.0, "elapsed": 1.0}\n' % (step, guess))

    (tmp_path / f"{QUICK}.metrics.jsonl").write_text(
        start(0) + watch(0, 0.1) + watch(9, 0.2) + start(0) + watch(0, 0.3) + start(4) + watch(9, 0.4))
    ref = shipped(QUICK, str(tmp_path))
    assert [(w.step, w.guess) for w in ref.watches] == [(0, 0.3), (9, 0.4)]  # the last run and its resume

# ------------------------------------------------------------------ ZeroGPU's daily quota

@pytest.mark.parametrize("text, left", [
    ("ZeroGPU quota exceeded: You have exceeded your GPU quota (60s requested vs. 30s left).", 30.0),
    ("You have exceeded your GPU quota (120s requested vs. 0s left). Try again in 23:59:10", 0.0),
    ("ZeroGPU quota exceeded", None),
])
def test_quota_errors_are_refusals_and_other_errors_are_not(text, left):
    r = gpu.quota_refusal(RuntimeError(text))
    assert r is not None and r.left == left and "log in to Hugging Face" in r.why
    assert gpu.quota_refusal(RuntimeError("CUDA error: out of memory")) is None


SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "cifar10_sample.npz")


def _cfg(folder) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=32, train_subset=256, knn_test=0, threads=1, device="cpu", seed=3,
                       data=SAMPLE, checkpoint_dir=str(folder), name="zg", model=ModelConfig(projector="128-128-128"))


def test_a_spent_quota_ends_the_run_saved_and_says_what_to_do(tmp_path, monkeypatch):
    """A stand-in `spaces` whose GPU calls are granted 2 steps, then refused with 30 s left, then with none."""
    asked: list[float] = []

    def fake_gpu(duration):
        def decorate(fn):
            def call(cfg, resume, seconds, steps, *rest):
                asked.append(duration(cfg, resume, seconds, steps, *rest))
                if len(asked) == 2:
                    raise RuntimeError(f"ZeroGPU quota exceeded ({seconds:.0f}s requested vs. 30s left)")
                if len(asked) > 3:
                    raise RuntimeError("ZeroGPU quota exceeded (30s requested vs. 0s left)")
                yield from fn(cfg, resume, seconds, 2, *rest)  # each granted call trains 2 steps
            return call
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    plan = gpu.chunk_plan(str(tmp_path / "cache"), {**{"SPACE_ID": "a/b", "SPACES_ZERO_GPU": "true"}})
    assert plan.refused is gpu.quota_refusal
    events = list(run_chunked(_cfg(tmp_path), threading.Event(), None, plan))
    end = events[-1]
    assert asked == [120.0, 120.0, 30.0, 30.0]  # refused at 120 s: tried once with the 30 s left, then refused
    assert end.status == "stopped" and end.step == 4 and end.checkpoint
    assert "ZeroGPU quota for today is used up" in end.reason and "resume it then" in end.reason
    resumed = list(run_chunk(_cfg(tmp_path).to_dict(), end.checkpoint, None, None, str(tmp_path / "nostop")))
    assert resumed[0].start_step == 4 and resumed[-1].status == "finished"  # the saved run goes on later


def test_a_quota_spent_before_the_first_call_says_nothing_was_trained(tmp_path):
    def refuse(*_args):
        raise RuntimeError("You have exceeded your GPU quota (120s requested vs. 5s left)")
        yield  # a generator, as a call is

    plan = ChunkPlan(120.0, call=refuse, refused=gpu.quota_refusal)
    end = list(run_chunked(_cfg(tmp_path), threading.Event(), None, plan))[-1]
    assert end.status == "stopped" and end.checkpoint is None and "nothing was trained yet" in end.reason
