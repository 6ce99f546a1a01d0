"""GPU on a Space: the `gpu` preset, when runs are cut into ZeroGPU calls (services/gpu.py), the `spaces`
decorator only on a Space, and what the Train tab says about the device."""
import sys
import types

import pytest
import torch

from services import gpu
from ui.train_tab import GPU_ON_CPU, describe_device, presets
from vicreg.core.config import TrainConfig
from vicreg.core.presets import PRESETS
from vicreg.orchestration.chunks import ChunkPlan, in_fresh_process, run_chunk, train_seconds

ZERO = {"SPACE_ID": "someone/vicreg", "SPACES_ZERO_GPU": "true"}


def test_the_gpu_preset_is_the_full_recipe_sized_for_one_gpu():
    cfg = TrainConfig.from_preset("gpu").validate()
    assert (cfg.name, cfg.optimizer, cfg.batch_size, cfg.epochs, cfg.warmup_epochs) == ("gpu", "lars", 256, 100, 10)
    assert cfg.scaled_lr() == pytest.approx(0.3) and cfg.wd() == 1e-4 and not cfg.compile  # no compile on ZeroGPU
    assert cfg.train_subset is None and cfg.model.projector == "2048-2048-2048"


@pytest.mark.parametrize("env, zero, seconds", [
    ({}, False, None),
    ({"SPACES_ZERO_GPU": "true"}, False, None),  # not a Space
    ({"SPACE_ID": "someone/vicreg"}, False, None),  # a Space without ZeroGPU
    (ZERO, True, 120.0),
    ({**ZERO, "SPACES_ZERO_GPU": "1"}, True, 120.0),
    ({**ZERO, "SPACES_ZERO_GPU": "True"}, True, 120.0),
    ({**ZERO, "SPACES_ZERO_GPU": "false"}, False, None),
    ({**ZERO, "VICREG_GPU_CHUNK_SECONDS": "60"}, True, 60.0),
    ({"VICREG_GPU_CHUNK_SECONDS": "30"}, False, 30.0),  # forced off a Space: calls in fresh processes
    ({"VICREG_GPU_CHUNK_SECONDS": "soon"}, False, 120.0),
    ({"VICREG_GPU_CHUNK_SECONDS": "5"}, False, 120.0),
])
def test_when_runs_are_cut_into_calls(env, zero, seconds):
    assert gpu.zero_gpu(env) is zero and gpu.chunk_seconds(env) == seconds


def test_off_a_space_the_decorator_is_the_identity_and_spaces_is_not_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    assert gpu.gpu_decorator(60, {})(run_chunk) is run_chunk
    assert "spaces" not in sys.modules
    assert gpu.chunk_plan(env={}) is None
    plan = gpu.chunk_plan("cache", {"VICREG_GPU_CHUNK_SECONDS": "45"})
    assert plan == ChunkPlan(45.0, call=in_fresh_process, cache_dir="cache", zero_gpu=False)
    assert plan.note.startswith("Training runs as consecutive 45-second calls, each in a fresh process; each resumes")


def test_on_zerogpu_each_call_is_a_spaces_gpu_call_of_the_chunk_length(monkeypatch):
    made = []

    def fake_gpu(duration):
        def decorate(fn):
            made.append((fn, duration))
            return lambda *a: fn(*a)
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    plan = gpu.chunk_plan("cache", {**ZERO, "VICREG_GPU_CHUNK_SECONDS": "90"})
    assert plan.zero_gpu and plan.seconds == 90 and plan.cache_dir == "cache" and plan.steps is None
    [(fn, duration)] = made
    assert fn is run_chunk and duration({}, None, 90.0, None, "stop") == 90.0  # ZeroGPU asks for the call's seconds
    assert "ZeroGPU GPU calls" in plan.note


def test_a_space_without_the_spaces_package_runs_undecorated(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    assert gpu.gpu_decorator(60, {"SPACE_ID": "someone/vicreg"})(run_chunk) is run_chunk
    assert gpu.chunk_plan(env=ZERO) is None  # no GPU calls to cut runs into


def test_a_call_keeps_a_quarter_for_starting_and_saving():
    assert [train_seconds(s) for s in (120, 300, 40, 20)] == [90, 225, 30, 10]


def test_the_train_tab_lists_the_gpu_recipe_and_says_what_it_needs():
    on_cpu, on_gpu = presets(False), presets(True)
    cpu_presets = [k for k in ("quick_demo", "long_demo", "cpu30", "cpu90", "cpu150", "cpu120", "full") if k in PRESETS]
    assert [key for _, key in on_cpu] == [*cpu_presets, "gpu", "custom"]
    assert dict((k, label) for label, k in on_cpu)["gpu"] == "GPU recipe (LARS, batch 256, 100 epochs; meant for a GPU)"
    assert dict((k, label) for label, k in on_gpu)["gpu"] == "GPU recipe (LARS, batch 256, 100 epochs)"
    before = torch.get_num_threads()
    note = describe_device("cpu", "gpu")
    assert note.startswith("**Device:** cpu, ") and GPU_ON_CPU in note
    assert GPU_ON_CPU not in describe_device("cpu", "quick_demo")
    plan = ChunkPlan(120.0, zero_gpu=True)
    assert describe_device("cpu", "quick_demo", plan).endswith(f"ℹ️ {plan.note}")
    assert "no CUDA GPU is available here" in describe_device("cuda:7") or torch.cuda.device_count() > 7
    assert torch.get_num_threads() == before
