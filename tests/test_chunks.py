"""A run cut into bounded calls (ZeroGPU's way, vicreg/orchestration/chunks.py) equals one uninterrupted run bit for
bit, each call resuming in a fresh process; the training job shows the calls as one continuous run."""
import os
import threading

import pytest
import torch

from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.orchestration.chunks import ChunkPlan, in_fresh_process, run_chunk, run_chunked
from vicreg.orchestration.jobs import TrainingJob
from vicreg.runfiles.checkpoint import load_checkpoint, read_meta
from vicreg.runfiles.events import EndEvent, StepEvent
from vicreg.training.train import train

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "cifar10_sample.npz")
STEPS_PER_EPOCH, EPOCHS = 8, 2  # 256 images at batch 32


def _cfg(folder, name: str) -> TrainConfig:
    return TrainConfig(epochs=EPOCHS, batch_size=32, train_subset=256, knn_test=0, threads=1, device="cpu", seed=3,
                       data=SAMPLE, checkpoint_dir=str(folder), name=name,
                       model=ModelConfig(projector="256-256-256", width=8))


def _recording(call, seen: list):
    """`call`, noting where each call resumes from: (step, step_in_epoch) of its checkpoint, None for a fresh start."""
    def wrapped(cfg, resume, *rest):
        meta = read_meta(resume) if resume else None
        seen.append((meta["step"], meta["step_in_epoch"]) if meta else None)
        yield from call(cfg, resume, *rest)
    return wrapped


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # train() sets the process's thread count


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, in this process."""
    before = torch.get_num_threads()
    events = list(train(_cfg(tmp_path_factory.mktemp("straight"), "straight")))
    torch.set_num_threads(before)
    assert events[-1].status == "finished"
    return events


def test_a_run_cut_into_calls_in_fresh_processes_equals_one_run_bit_for_bit(tmp_path, straight):
    steps = 4  # calls resume at steps 4, 8 and 12: mid-epoch, at the epoch's end, mid-epoch again
    seen: list = []
    plan = ChunkPlan(seconds=None, steps=steps, call=_recording(in_fresh_process, seen))
    chunked = list(run_chunked(_cfg(tmp_path, "chunked"), threading.Event(), None, plan))
    total = STEPS_PER_EPOCH * EPOCHS
    # one run: a StartEvent, every step once, both epochs, one EndEvent
    assert [e.kind for e in chunked].count("start") == 1 and [e.kind for e in chunked].count("end") == 1
    assert chunked[-1].status == "finished" and chunked[-1].step == total
    assert [e.step for e in chunked if e.kind == "epoch"] == [STEPS_PER_EPOCH, total]
    # where the calls resumed (step, step in epoch): (4, 4) and (12, 4) mid-epoch, with the augmentation stream
    # carried, and (8, 0) at the epoch's end
    assert seen == [None, *[(k, k % STEPS_PER_EPOCH) for k in range(steps, total, steps)]]
    # the losses and learning rates, and every tensor of the final checkpoints, are identical
    s_steps = [e for e in straight if isinstance(e, StepEvent)]
    c_steps = [e for e in chunked if isinstance(e, StepEvent)]
    assert [e.step for e in c_steps] == list(range(1, total + 1))
    assert [e.loss for e in c_steps] == [e.loss for e in s_steps]
    assert [(e.invariance, e.variance, e.covariance, e.lr) for e in c_steps] == \
           [(e.invariance, e.variance, e.covariance, e.lr) for e in s_steps]
    a, b = load_checkpoint(straight[-1].checkpoint), load_checkpoint(chunked[-1].checkpoint)
    assert a.tensors.keys() == b.tensors.keys() and len(a.tensors) > 100
    different = [k for k in a.tensors if not torch.equal(a.tensors[k], b.tensors[k])]
    assert different == []
    assert (b.meta["epoch"], b.meta["step"], b.meta["complete"]) == (a.meta["epoch"], a.meta["step"], True)


def _watched(job: TrainingJob, snaps: list):
    """Each call in this process, the job's snapshot taken as it starts."""
    def call(*args):
        snaps.append(job.snapshot())
        yield from run_chunk(*args)
    return call


def test_the_job_shows_the_calls_as_one_continuous_run(tmp_path):
    snaps: list = []
    job = TrainingJob()
    job.chunks = ChunkPlan(seconds=None, steps=3, call=_watched(job, snaps))
    ok, _ = job.start(_cfg(tmp_path, "job"))
    assert ok and job.wait(300)
    total = STEPS_PER_EPOCH * EPOCHS
    assert len(snaps) == 6  # calls ending at steps 3, 6, 9, 12, 15, 16
    for k, snap in enumerate(snaps[1:], 1):  # between calls: the same run, still running, its steps so far
        assert (snap.run_id, snap.status, snap.end) == (1, "running", None)
        assert [s.step for s in snap.steps] == list(range(1, 3 * k + 1))
        assert snap.start.start_step == 0 and snap.start.total_steps == total
    final = job.snapshot()
    assert (final.run_id, final.status, final.end.status) == (1, "finished", "finished")
    assert [s.step for s in final.steps] == list(range(1, total + 1))
    assert [e.epoch for e in final.epochs] == [1, 2]
    assert any("each resumes exactly from the checkpoint the last one saved" in n for n in final.start.notes)
    elapsed = [s.elapsed for s in final.steps]
    assert elapsed == sorted(elapsed)  # counted from the run's start, not each call's
    assert read_meta(final.end.checkpoint)["step"] == total


def _stopping(job: TrainingJob, at_step: int | None, calls: list):
    """Run each call in this process; press Stop after the first call (at_step None) or at a step."""
    def call(*args):
        calls.append(args[1])
        for ev in run_chunk(*args):
            yield ev
            if at_step is not None and isinstance(ev, StepEvent) and ev.step == at_step:
                job.stop()
                for _ in range(100):  # the stop reaches the call through a file, as it would another process
                    if os.path.exists(args[4]):
                        break
                    threading.Event().wait(0.05)
        if at_step is None:
            job.stop()
    return call


@pytest.mark.parametrize("at_step, ends_at", [(None, 3), (4, 4)])
def test_stop_works_between_and_within_calls(tmp_path, at_step, ends_at):
    calls: list = []
    job = TrainingJob()
    job.chunks = ChunkPlan(seconds=None, steps=3, call=_stopping(job, at_step, calls))
    assert job.start(_cfg(tmp_path, "stopme"))[0] and job.wait(300)
    snap = job.snapshot()
    assert (snap.status, snap.end.status, snap.end.step) == ("stopped", "stopped", ends_at)
    assert len(calls) == (1 if at_step is None else 2)  # no call starts after Stop
    meta = read_meta(snap.end.checkpoint)
    assert (meta["step"], meta["step_in_epoch"]) == (ends_at, ends_at)  # resumable where it stopped


def test_a_call_too_short_to_train_fails_instead_of_looping(tmp_path):
    ev = list(run_chunked(_cfg(tmp_path, "short"), threading.Event(), None, ChunkPlan(seconds=1e-6, call=run_chunk)))
    end = ev[-1]
    assert isinstance(end, EndEvent) and end.status == "failed" and end.step == 0
    assert end.reason == ("a training call failed: it ended before a single training step (starting up took the "
                          "whole call); set VICREG_GPU_CHUNK_SECONDS higher; the run is saved in checkpoint short: "
                          "resume it to go on")


def test_a_failing_call_ends_the_run_with_its_last_checkpoint(tmp_path):
    calls: list = []

    def call(*args):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("GPU task aborted")
        yield from run_chunk(*args)

    plan = ChunkPlan(seconds=None, steps=3, call=call)
    end = list(run_chunked(_cfg(tmp_path, "flaky"), threading.Event(), None, plan))[-1]
    assert (end.status, end.step, end.checkpoint) == ("failed", 3, calls[1][1])
    assert end.reason == ("a training call failed: RuntimeError: GPU task aborted; the run is saved in checkpoint "
                          "flaky: resume it to go on")
    assert read_meta(end.checkpoint)["step"] == 3
