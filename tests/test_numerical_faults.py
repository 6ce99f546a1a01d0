"""A NaN loss (injected with the VICREG_FAULT test hook, `nan@STEP`) stops the run with a message that
names the step, keeps the last good checkpoint as it was, and shows on the app's Train tab."""
import json
import os
import subprocess
import sys

import pytest
import torch
from app_fixtures import demo_pair  # noqa: F401
from conftest import write_packed

from services.settings import Settings
from services.studio import Studio
from ui.train_handlers import TrainHandlers
from ui.train_status import progress_html
from vicreg.core.config import AugmentConfig, ModelConfig, TrainConfig
from vicreg.orchestration.jobs import TrainingJob
from vicreg.runfiles.checkpoint import load_checkpoint
from vicreg.runfiles.files import file_sha256
from vicreg.runfiles.metrics import read_metrics

pytestmark = pytest.mark.reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 epochs of 2 steps on 32 real CIFAR-10 images (16-px views, a narrow projector: a quick step)
RUN = ["--epochs", "2", "--batch_size", "16", "--view_size", "16", "--projector", "64-64", "--knn_test", "8",
       "--threads", "1", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cifar) -> str:
    return write_packed(tmp_path_factory.mktemp("nan_data") / "tiny.npz", cifar, 32, 8)


def _cli(work, *args, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "VICREG_FAULT"}
    env.update(PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", VICREG_CACHE=str(work / "cache"),
               **({"VICREG_FAULT": fault} if fault else {}))
    return subprocess.run([sys.executable, "-m", "vicreg", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


def _finite(path) -> bool:
    return all(torch.isfinite(t).all() for t in load_checkpoint(str(path)).tensors.values() if t.is_floating_point())


def test_a_nan_loss_stops_the_cli_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny):
    ck = tmp_path / "ck" / "nan.safetensors"
    r = _cli(tmp_path, "TRAIN", *RUN, "--data", tiny, "--name", "nan", "--checkpoint_dir", "ck", fault="nan@3")
    assert r.returncode == 2, r.stderr  # an expected failure: the user's to fix (a lower --lr)
    assert "error: failed: FloatingPointError: loss became nan at step 3; lower the learning rate (--lr)" in r.stderr
    meta = load_checkpoint(str(ck)).meta  # epoch 1's checkpoint, saved before the NaN step
    assert (meta["epoch"], meta["step"]) == (1, 2) and _finite(ck)
    before, side = file_sha256(str(ck)), (tmp_path / "ck" / "nan.json").read_bytes()

    # resumed from it, a NaN at step 4 stops the run and leaves that checkpoint byte for byte as it was
    resume = ["RE_TRAIN", "--model_path", "ck/nan.safetensors", *RUN[RUN.index("--knn_test"):], "--data", tiny]
    r = _cli(tmp_path, *resume, fault="nan@4")
    assert r.returncode == 2 and "loss became nan at step 4" in r.stderr, r.stderr
    assert file_sha256(str(ck)) == before and (tmp_path / "ck" / "nan.json").read_bytes() == side
    end = read_metrics(str(tmp_path / "ck" / "nan.metrics.jsonl"))[-1]
    assert end["kind"] == "end" and end["status"] == "failed" and "at step 4" in end["reason"]

    # with the loss read back only every 5 steps (as on a GPU), a stop right after the NaN step must not save
    # the broken weights over the good checkpoint
    r = _cli(tmp_path, *resume, "--log_every", "5", fault="nan@3,stop:0:3")
    assert r.returncode == 2 and "the weights stopped being finite by step 3" in r.stderr, r.stderr
    assert file_sha256(str(ck)) == before and _finite(ck)

    r = _cli(tmp_path, *resume)  # the kept checkpoint is a good one: the run finishes from it
    assert r.returncode == 0 and "finished: trained 2 epochs" in r.stdout, r.stderr
    assert load_checkpoint(str(ck)).meta["step"] == 4 and _finite(ck)


def test_the_train_tab_shows_the_nan_message_and_the_kept_checkpoint(tmp_path, tiny, monkeypatch, demo_pair):  # noqa: F811
    monkeypatch.setenv("VICREG_FAULT", "nan@3")  # read once, when the job's run sets up
    folder = tmp_path / "checkpoints"
    cfg = TrainConfig(epochs=2, batch_size=16, model=ModelConfig(projector="64-64"),
                      augment=AugmentConfig(view_size=16), knn_test=8, threads=1, device="cpu", precision="fp32",
                      data=tiny, checkpoint_dir=str(folder), name="nan_app")
    job, threads = TrainingJob(), torch.get_num_threads()
    try:
        assert job.start(cfg)[0] and job.wait(300)
    finally:
        torch.set_num_threads(threads)  # the run set it for the process
    snap = job.snapshot()
    assert snap.status == "failed" and snap.end.step == 3
    assert snap.end.reason == "FloatingPointError: loss became nan at step 3; lower the learning rate (--lr)"
    assert snap.end.checkpoint == str(folder / "nan_app.safetensors") and _finite(snap.end.checkpoint)
    assert json.load(open(folder / "nan_app.json"))["step"] == 2

    studio = Studio(Settings(data_root=tiny, sample=demo_pair[1], default_checkpoint=demo_pair[0],
                             checkpoint_dir=str(folder), cache_dir=str(tmp_path / "cache"), threads=1))
    html = TrainHandlers(studio, job).poll(None, None, None).progress
    assert html == progress_html(snap)
    assert "<b>failed</b>" in html and "❌ FloatingPointError: loss became nan at step 3" in html
    assert "checkpoint <code>nan_app</code>" in html  # the last good checkpoint, named beside the message
