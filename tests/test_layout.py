"""Building the page only lays it out (ui/layout.py): it starts no feature bank, makes no models' runtime,
starts no thread or process and does not import `spaces`. On a ZeroGPU Space the GPU calls must be decorated
before launch and nothing may ask torch about CUDA before that, so the work belongs to the app's start-up
(app.py), in one order: how runs are cut (the GPU calls decorated), the page, the background work of the
checkpoint the page opens on, the launch."""
import json
import multiprocessing
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import save_file

import app
import services.features.models
from services.features.banks import Builder
from services.settings import SAMPLE, Settings
from services.studio import Studio
from services.training import Training
from ui.layout import build_demo
from vicreg.core.config import TrainConfig
from vicreg.orchestration.jobs import TrainingJob
from vicreg.runfiles.checkpoint import FORMAT


def listed_checkpoint(folder) -> str:
    """A file the checkpoint list shows (its metadata is read, never its weights, while the page is laid out)."""
    folder.mkdir(exist_ok=True)
    path = str(folder / "listed.safetensors")
    meta = {"format": FORMAT, "config": TrainConfig().to_dict(), "epoch": 1, "step": 1}
    save_file({"x": torch.zeros(1)}, path, metadata={"vicreg": json.dumps(meta)})
    return path


@pytest.fixture
def spies(monkeypatch):
    """What would start work, recorded instead of started (bank and map requests, processes) or recorded as
    it happens (runtimes)."""
    seen = {"banks": [], "runtimes": [], "processes": []}
    make = services.features.models.make_runtime

    def request(_builder, wanted, **_retry):
        seen["banks"].append([(kind, where.checkpoint) for kind, where in wanted])
        return []

    def runtime(*args, **kwargs):
        seen["runtimes"].append(args)
        return make(*args, **kwargs)

    def popen(args, *_rest, **_kwargs):
        seen["processes"].append(args)
        raise OSError("no process may start here")

    monkeypatch.setattr(Builder, "request", request)
    monkeypatch.setattr(services.features.models, "make_runtime", runtime)
    monkeypatch.setattr(subprocess, "Popen", popen)
    return seen


@pytest.fixture
def zero_gpu(tmp_path, monkeypatch):
    """A ZeroGPU Space whose stand-in `spaces` package can be imported; it is gone again afterwards."""
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "spaces.py").write_text("def GPU(duration=60):\n    return lambda fn: lambda *a, **k: fn(*a, **k)\n")
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.setenv("SPACE_ID", "someone/vicreg-studio")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    sys.modules.pop("spaces", None)
    yield
    sys.modules.pop("spaces", None)


@pytest.mark.usefixtures("zero_gpu")
def test_building_the_page_starts_no_work(tmp_path, spies):
    checkpoint = listed_checkpoint(tmp_path / "checkpoints")
    settings = Settings(data_root=str(tmp_path / "no-data"), sample=SAMPLE, default_checkpoint=checkpoint,
                        checkpoint_dir=str(tmp_path / "checkpoints"), cache_dir=str(tmp_path / "cache"), threads=1,
                        space=True, device="cpu")  # as on ZeroGPU (services/settings.py)
    studio, job = Studio(settings), TrainingJob()
    assert studio.catalog.preferred(None) == checkpoint  # a checkpoint the page would open on, with work to start
    threads, children = set(threading.enumerate()), multiprocessing.active_children()
    demo = build_demo(studio, job)
    assert "explore_upload" in {d.api_name for d in demo.fns.values()}  # the whole page was built
    assert spies == {"banks": [], "runtimes": [], "processes": []}
    assert sorted(t.name for t in set(threading.enumerate()) - threads) == []
    assert multiprocessing.active_children() == children
    assert "spaces" not in sys.modules


def test_start_up_cuts_runs_then_lays_out_the_page_then_starts_its_checkpoints_work(tmp_path, monkeypatch, spies):
    checkpoint = listed_checkpoint(tmp_path / "checkpoints")
    env = {"VICREG_CHECKPOINTS": str(tmp_path / "checkpoints"), "VICREG_CACHE": str(tmp_path / "cache"),
           "VICREG_DATA": str(tmp_path / "no-data"), "VICREG_DEFAULT_CHECKPOINT": checkpoint, "VICREG_SAMPLE": SAMPLE,
           "VICREG_APP_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("SPACE_ID", "VICREG_STORAGE", "VICREG_GPU_CHUNK_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    order, start_up = [], Training.start_up

    def cut_runs(training):
        order.append(("runs cut", list(spies["banks"])))
        start_up(training)

    def build(_studio, _job):
        order.append(("page", list(spies["banks"])))
        return "demo"

    def launch(demo, *_where):
        order.append(("launch", demo, list(spies["banks"])))

    monkeypatch.setattr(Training, "start_up", cut_runs)
    monkeypatch.setattr(app, "build_demo", build)
    monkeypatch.setattr(app, "launch", launch)
    app.main([])
    work = [[("bank", checkpoint), ("map", checkpoint)]]  # the full dataset is not here: no sample stands in
    assert order == [("runs cut", []), ("page", []), ("launch", "demo", work)]
