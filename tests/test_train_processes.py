"""A run of two processes started from the Train tab's handler, on the CPU (gloo), on a fresh clone's data (the
embedded sample): it runs under torchrun as a child of the app, the charts follow rank 0's metrics file, Stop
ends every rank with one resumable checkpoint, and RE_TRAIN finishes that run. Tiny sizes: 64 images, batch 16."""
import json
import os

import pytest
from app_fixtures import demo_pair  # noqa: F401

from services.settings import Settings
from services.studio import Studio
from ui.layout import Handlers
from vicreg.__main__ import main as cli
from vicreg.orchestration import launch
from vicreg.orchestration.jobs import TrainingJob
from vicreg.runfiles.checkpoint import load_checkpoint

# 8 epochs of 4 steps: long enough that Stop lands mid-run on a fast CPU (2 epochs once finished before it did)
EPOCHS = 8
STEPS = 4 * EPOCHS
KNOBS = dict(name="two", epochs=EPOCHS, batch_size=16, optimizer="lars", lr=0, train_subset=64, inv_coeff=25,
             var_coeff=25, cov_coeff=1, knn_train=64, knn_test=0, warmup_epochs=0.5)


def wait_for(job: TrainingJob, until, timeout: float = 120.0):
    import time

    t0 = time.time()
    while time.time() - t0 < timeout:
        snap = job.snapshot()
        if until(snap):
            return snap
        time.sleep(0.1)
    pytest.fail(f"timed out waiting on the job: {job.snapshot()}")


def ranks_alive(name: str) -> list[str]:
    """Command lines of processes still running this run (torchrun or a rank), from /proc."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "vicreg" in cmd and f"--name={name}" in cmd:
            found.append(cmd)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_two_processes_from_the_page_stop_and_resume(demo_pair, tmp_path):  # noqa: F811
    folder = tmp_path / "checkpoints"
    studio = Studio(Settings(data_root=str(tmp_path / "no-data"), sample=demo_pair[1],
                             default_checkpoint=demo_pair[0], checkpoint_dir=str(folder),
                             cache_dir=str(tmp_path / "cache"), threads=2))
    job = TrainingJob(data_loader=studio.training_data)
    h = Handlers.create(studio, job).train
    out = h.start("quick_demo", threads=2, device="cpu", secret="", processes=2, **KNOBS)
    assert out.message == ("✅ run 1 started with 2 processes on the embedded 2,000-image CIFAR-10 sample (the full "
                           "dataset is not available here): saving to checkpoint <code>two</code>"), out.message
    snap = wait_for(job, lambda s: len(s.steps) >= 2)
    assert snap.processes == 2 and snap.start.n_train == 64 and snap.start.total_steps == STEPS
    assert snap.start.notes[0].startswith("2 processes (gloo): global batch 16 = 8 per rank")
    page = h.poll(None, None, None)  # what the page shows: rank 0's events
    loss = page.loss_plot.to_plotly_json()["data"][0]
    assert list(loss["x"])[:2] == [1, 2] and page.status["processes"] == 2 and page.status["status"] == "running"
    assert len(ranks_alive("two")) == 3  # torchrun and its two ranks
    assert h.stop("", None) == "✅ stopping after the current step; a resumable checkpoint will be saved"
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.end.reason.startswith("stopped at epoch"), snap.end
    assert ranks_alive("two") == []  # every rank has ended
    assert sorted(os.listdir(folder)) == ["two.json", "two.metrics.jsonl", "two.safetensors"]  # one checkpoint
    meta = load_checkpoint(snap.end.checkpoint).meta
    assert (meta["step"], meta["world_size"], meta["complete"]) == (snap.end.step, 2, False)
    assert 2 <= meta["step"] < STEPS
    stopped_at = meta["step"]
    lines = [json.loads(line) for line in open(folder / "two.metrics.jsonl")]
    assert [e["step"] for e in lines if e["kind"] == "step"] == list(range(1, stopped_at + 1))  # rank 0's, once
    assert [e.step for e in snap.steps] == list(range(1, stopped_at + 1))  # the charts saw every one of them
    # RE_TRAIN (one process) finishes the planned run from that checkpoint
    assert cli(["RE_TRAIN", "--model_path", snap.end.checkpoint, "--device", "cpu", "--threads", "1", "--data",
                demo_pair[1], "--knn_test", "0"]) == 0
    meta = load_checkpoint(snap.end.checkpoint).meta
    assert (meta["epoch"], meta["step"], meta["complete"]) == (EPOCHS, STEPS, True)
    lines = [json.loads(line) for line in open(folder / "two.metrics.jsonl")]
    assert [e["step"] for e in lines if e["kind"] == "step"] == list(range(1, STEPS + 1))
    assert launch._running == set()


def test_a_failing_run_of_two_processes_reports_the_command_lines_error(tmp_path):
    """Rank 0 fails before it writes any event (no data): the job ends with the command line's own message."""
    from vicreg.core.config import TrainConfig

    job = TrainingJob()
    missing = str(tmp_path / "nowhere.npz")
    cfg = TrainConfig(data=missing, checkpoint_dir=str(tmp_path), device="cpu", threads=2, batch_size=16,
                      name="nodata")
    assert job.start(cfg, processes=2) == (True, "run 1 started with 2 processes")
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.status == "failed" and snap.start is None, snap.end
    assert snap.end.reason.startswith(f"DataError: rank 0 of 2: packed dataset {missing} does not exist"), snap.end
    assert not os.path.exists(tmp_path / "nodata.safetensors")
