import threading

from vicreg.core.config import TrainConfig
from vicreg.orchestration.jobs import TrainingJob


def test_concurrent_starts_make_one_job_and_stop_is_resumable(cifar, tmp_path):
    job = TrainingJob(data_loader=lambda _cfg: cifar)
    cfg = TrainConfig(epochs=3, batch_size=32, train_subset=32 * 40, knn_test=0, checkpoint_dir=str(tmp_path),
                      name="job", log_every=1)
    results = []
    barrier = threading.Barrier(4)

    def go():
        barrier.wait()
        results.append(job.start(cfg))

    threads = [threading.Thread(target=go) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(ok for ok, _ in results) == [False, False, False, True]
    assert all("already in progress" in msg for ok, msg in results if not ok)
    # wait for a few steps, then stop
    for _ in range(600):
        snap = job.snapshot()
        if len(snap.steps) >= 3:
            break
        threading.Event().wait(0.1)
    assert job.snapshot().run_id == 1 and job.snapshot().status == "running"
    ok, _ = job.stop()
    assert ok
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.end.checkpoint and snap.end.status == "stopped"
    assert len(snap.steps) >= 3 and snap.start.total_steps == 120
    # a second run may start now, resuming the stopped one
    ok, _ = job.start(cfg, resume=snap.end.checkpoint)
    assert ok and job.snapshot().run_id == 2
    job.stop()
    assert job.wait(120)
    snap2 = job.snapshot()
    assert snap2.start.start_step == snap.end.step  # continued where it stopped


def test_failure_is_reported_not_raised(tmp_path):
    job = TrainingJob()
    missing = str(tmp_path / "nowhere.npz")  # a packed dataset path: no download is ever attempted
    cfg = TrainConfig(data=missing, checkpoint_dir=str(tmp_path))
    ok, _ = job.start(cfg)
    assert ok and job.wait(60)
    snap = job.snapshot()
    assert snap.status == "failed" and snap.end.status == "failed" and snap.start is None and snap.steps == []
    assert snap.end.reason.startswith(f"DataError: packed dataset {missing} does not exist; point --data")
    ok, msg = job.stop()
    assert not ok and msg == "no training run is in progress"


def test_time_limit_stops_the_run_with_a_checkpoint(cifar, tmp_path):
    from services.training import TrainingJob  # the app's job: it words the visitors' time limit
    from vicreg.runfiles.checkpoint import load_checkpoint

    job = TrainingJob(data_loader=lambda _cfg: cifar)
    cfg = TrainConfig(epochs=50, batch_size=16, train_subset=16 * 50, knn_test=0, checkpoint_dir=str(tmp_path),
                      name="limited", log_every=1, threads=1)
    ok, _ = job.start(cfg, owner="visitor-token", time_limit=4.0)
    assert ok and job.snapshot().owner == "visitor-token" and job.snapshot().time_limit == 4.0
    assert job.wait(90)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.end.reason.endswith(
        ": runs started by visitors stop after 0.0666667 min on this shared server")
    assert 0 < snap.end.step < 50 * 50 and load_checkpoint(snap.end.checkpoint).meta["step"] == snap.end.step


def test_events_read_back_from_the_metrics_file_are_the_events_written():
    """A torchrun run's events come from rank 0's metrics file (vicreg/orchestration/launch.py): each kind reads back
    equal."""
    from vicreg.orchestration.launch import event
    from vicreg.runfiles.events import EndEvent, EpochEvent, StartEvent, StepEvent, to_dict

    written = [StartEvent("r", "cpu", 0, 0, 2, 4, 8, 64, None, {"batch_size": 16}, notes=["2 processes"]),
               StepEvent(0, 1, 8, 25.0, 0.2, 0.6, 4.1, 0.01, 40.0, 0.3, 12.5, 1.0, warning="collapse"),
               EpochEvent(1, 4, None, "ck/r.safetensors", 2.0, 3.0),
               EndEvent("failed", "ValueError: bad", "ck/r.safetensors", 1, 4, 5.0, exit_code=2)]
    assert [event(to_dict(ev)) for ev in written] == written
    assert event({**to_dict(written[2]), "added_later": 1}) == written[2]  # a newer writer's fields are left out


def test_a_zerogpu_job_runs_one_process(tmp_path):
    from vicreg.orchestration.chunks import ChunkPlan

    job = TrainingJob(chunks=ChunkPlan(seconds=60))
    assert job.start(TrainConfig(checkpoint_dir=str(tmp_path)), processes=2) == (
        False, "a run on ZeroGPU uses one process")
    assert job.snapshot().run_id == 0
