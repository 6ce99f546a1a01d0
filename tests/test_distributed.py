"""Data-parallel training on CPU (gloo): the same VICReg as one process, torchrun runs on real CIFAR-10,
stop agreement with exact resume, a killed rank, and the small pure pieces."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vicreg.core import distributed as ddp
from vicreg.core.config import ModelConfig
from vicreg.core.model import VICReg
from vicreg.runfiles.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBAL_BATCH, WORLD = 8, 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _views():
    g = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g), torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)


def plain_gather(x):
    """The bug class: all_gather with no backward of its own, so gradient reaches only this rank's rows
    through this rank's copy of the loss; the other ranks' copies' gradient for them is dropped."""
    out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.detach().contiguous())
    out[dist.get_rank()] = x
    return torch.cat(out)


def _grads(model, x_a, x_b, dtype, dist_ctx=None):
    """Loss terms and parameter gradients of one step in `dtype` (distributed: this rank's rows, DDP)."""
    model = model.to(dtype)
    fwd = ddp.wrap(model, torch.device("cpu"), dist_ctx) if dist_ctx else model
    terms, _, _ = fwd(x_a.to(dtype), x_b.to(dtype))
    terms.total.backward()
    values = torch.stack([t.detach() for t in terms]).double()
    if dist_ctx:  # invariance is per pair and local: its global value is the mean over ranks (equal shards)
        values = ddp.mean_over_ranks(values, dist_ctx)
    return values, {n: p.grad.double() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, variant: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        d = ddp.Dist(rank, WORLD, rank, "cpu", "gloo")
        x_a, x_b = _views()
        rows = ddp.local_slice(0, GLOBAL_BATCH, d)
        results = {}
        for dtype in (torch.float64, torch.float32):
            torch.manual_seed(0)
            model = ddp.prepare(VICReg(ModelConfig(projector="64-64")), "cpu", True, d)  # every BN synced
            if variant == "plain":
                model.gather = plain_gather
            results[str(dtype)] = _grads(model, x_a[rows], x_b[rows], dtype, d)
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _single_process(dtype):
    torch.manual_seed(0)
    return _grads(VICReg(ModelConfig(projector="64-64")), *_views(), dtype)


def _errors(got, want) -> dict[str, float]:
    """Each parameter's relative error; parameters whose exact gradient is zero (the Linear bias before
    BatchNorm) are measured against 1/1000 of the whole gradient's norm instead of their own."""
    total = sum(g.norm() ** 2 for g in want.values()) ** 0.5
    return {n: ((got[n] - g).norm() / max(g.norm(), 1e-3 * total)).item() for n, g in want.items()}


def _spawn(variant: str, tmp_path) -> dict:
    out = str(tmp_path / f"{variant}.pt")
    mp.spawn(_worker, args=(_free_port(), variant, out), nprocs=WORLD, join=True)
    return torch.load(out)


def test_two_processes_give_the_single_process_loss_and_gradients(tmp_path):
    """Global batch 8 = 2 ranks x 4, every BatchNorm synced, DDP. In float64 the two agree to rounding
    (< 1e-10). In fp32 the loss terms and the projector's gradients agree to < 1e-5; the backbone's fp32
    gradients carry rounding noise of ~5e-3 even in one process (measured against float64: 18 train-mode
    BatchNorms cancel most of the gradient), so there the distributed fp32 run must be as close to the
    exact (float64) gradient as the single-process fp32 run is (worst parameter, within a factor 3)."""
    got = _spawn("full", tmp_path)
    terms64, exact = _single_process(torch.float64)
    d_terms, d_grads = got[str(torch.float64)]
    assert ((d_terms - terms64).abs() / terms64.abs()).max() < 1e-10
    assert max(_errors(d_grads, exact).values()) < 1e-10
    terms32, single32 = _single_process(torch.float32)
    d_terms32, d_grads32 = got[str(torch.float32)]
    assert ((d_terms32 - terms32).abs() / terms32.abs()).max() < 1e-5
    vs_single = _errors(d_grads32, single32)
    assert max(v for n, v in vs_single.items() if n.startswith("projector.")) < 1e-5
    noise, dist_err = max(_errors(single32, exact).values()), max(_errors(d_grads32, exact).values())
    assert dist_err < 3 * noise + 1e-5, (dist_err, noise)


def test_the_comparison_fails_with_a_gather_that_drops_gradient(tmp_path):
    got = _spawn("plain", tmp_path)
    terms64, exact = _single_process(torch.float64)
    d_terms, d_grads = got[str(torch.float64)]
    assert ((d_terms - terms64).abs() / terms64.abs()).max() < 1e-10  # the forward is the same ...
    assert max(_errors(d_grads, exact).values()) > 1e-2  # ... but the gradient is not
    d_terms32, d_grads32 = got[str(torch.float32)]
    assert max(_errors(d_grads32, _single_process(torch.float32)[1]).values()) > 1e-2


def test_placement_falls_back_to_pinned_host_memory():
    assert ddp.placement(100, 1000) == "device"
    assert ddp.placement(500, 1000) == "device"
    assert ddp.placement(501, 1000) == "pinned"
    assert ddp.placement(150_000_000, 20_000_000_000) == "device"  # CIFAR-10 on any GPU
    assert ddp.placement(30 * 2**30, 40 * 2**30, fraction=0.5) == "pinned"


def test_local_slices_tile_each_global_batch():
    rows = [ddp.local_slice(3, 12, ddp.Dist(r, 4)) for r in range(4)]
    assert [(s.start, s.stop) for s in rows] == [(36, 39), (39, 42), (42, 45), (45, 48)]
    assert ddp.rank_seed(123, 0) == 123 and ddp.rank_seed(123, 1) != 123


def _torchrun(args, tmp_path, env=None, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "vicreg", *args, "--device", "cpu", "--threads", "1", "--knn_test", "0",
           "--checkpoint_dir", str(tmp_path)]
    full = {k: v for k, v in os.environ.items() if k != "VICREG_FAULT"}
    full.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, **(env or {})})
    p = subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout.replace("\r", "\n") + p.stderr.replace("\r", "\n")


@pytest.fixture
def data(packed_cifar, monkeypatch):
    """Small real CIFAR-10 for TRAIN's --data, and in VICREG_DATA too: RE_TRAIN takes its data from there
    (a run setting), so a resumed run reads the same images as the straight one."""
    monkeypatch.setenv("VICREG_DATA", packed_cifar)
    return packed_cifar


def _train_args(data, name, epochs=1):
    return ["TRAIN", "--data", data, "--train_subset", "64", "--batch_size", "16", "--epochs", str(epochs),
            "--projector", "64-64", "--width", "8", "--name", name]


def test_torchrun_trains_stops_together_and_resumes_exactly(data, tmp_path):
    rc, out = _torchrun(_train_args(data, "straight"), tmp_path)
    assert rc == 0, out
    assert out.count("training straight on") == 1 and out.count("finished:") == 1  # rank 1 stays quiet
    # rank 1 alone asks to stop before step 3: both ranks stop there, one resumable checkpoint
    rc, out = _torchrun(_train_args(data, "part"), tmp_path, env={"VICREG_FAULT": "stop:1:2"})
    assert rc == 0 and "stopped at epoch 1, step 2/4" in out, out
    part = load_checkpoint(str(tmp_path / "part.safetensors"))
    assert (part.meta["step"], part.meta["step_in_epoch"], part.meta["world_size"]) == (2, 2, 2)
    assert {"rng.augment", "rng.augment.0", "rng.augment.1"} <= set(part.tensors)
    assert not torch.equal(part.tensors["rng.augment.0"], part.tensors["rng.augment.1"])  # own streams
    rc, out = _torchrun(["RE_TRAIN", "--model_path", str(tmp_path / "part.safetensors")], tmp_path)
    assert rc == 0 and "finished:" in out, out
    a = load_checkpoint(str(tmp_path / "straight.safetensors")).model_state()
    b = load_checkpoint(str(tmp_path / "part.safetensors")).model_state()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k
    # a checkpoint from 2 processes resumes in 1 with the same global batch, and says so
    cmd = [sys.executable, "-m", "vicreg", "RE_TRAIN", "--model_path", str(tmp_path / "part.safetensors"), "--epochs",
           "1", "--device", "cpu", "--threads", "1", "--knn_test", "0"]
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                       timeout=240)
    assert p.returncode == 0 and "written by 2 process(es) and resumes on 1" in p.stdout, p.stdout + p.stderr
    meta = load_checkpoint(str(tmp_path / "part.safetensors")).meta
    assert (meta["epoch"], meta["step"], meta["step_in_epoch"], meta["complete"]) == (2, 8, 0, True)
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.startswith("part")] == ["part.json", "part.metrics.jsonl", "part.safetensors"]
    lines = [json.loads(line) for line in open(tmp_path / "part.metrics.jsonl")]
    # written by rank 0 only: 2 + 2 + 4 steps over the three runs, each step once
    assert [e["step"] for e in lines if e["kind"] == "step"] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_killed_rank_ends_the_run_and_the_last_checkpoint_resumes(data, tmp_path):
    # rank 1 dies abruptly before step 7, in epoch 2, after the epoch-1 checkpoint (step 4)
    rc, out = _torchrun(_train_args(data, "killed", epochs=2), tmp_path, env={"VICREG_FAULT": "exit:1:6"})
    assert rc != 0
    assert "rank      : 1" in out and "exitcode  : 17" in out, out  # torchrun names the rank that died
    assert "rank 0 of 2: a collective with the other processes failed" in out, out
    meta = load_checkpoint(str(tmp_path / "killed.safetensors")).meta
    assert (meta["epoch"], meta["step"]) == (1, 4)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp") or ".tmp" in n]
    rc, out = _torchrun(["RE_TRAIN", "--model_path", str(tmp_path / "killed.safetensors")], tmp_path)
    assert rc == 0 and "resuming killed" in out, out
    meta = load_checkpoint(str(tmp_path / "killed.safetensors")).meta
    assert (meta["epoch"], meta["step"], meta["complete"]) == (2, 8, True)


def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step_with_one_checkpoint(data, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: torchrun forwards its own SIGINT to the
    workers too; the ranks agree on one step, rank 0 saves every rank's stream, and the run resumes."""
    import signal
    import time

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "-m", "vicreg",
           *_train_args(data, "ctrlc", epochs=3), "--device", "cpu", "--threads", "1", "--knn_test", "0",
           "--checkpoint_dir", str(tmp_path)]
    env = {**{k: v for k, v in os.environ.items() if k != "VICREG_FAULT"}, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    metrics, t0 = tmp_path / "ctrlc.metrics.jsonl", time.time()
    try:
        while time.time() - t0 < 180 and p.poll() is None:
            if metrics.exists() and '"step": 2,' in metrics.read_text():
                break
            time.sleep(0.1)
        os.killpg(p.pid, signal.SIGINT)
        out, _ = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    out = out.replace("\r", "\n")
    assert out.count("stopped: stopped at epoch") == 1, out  # rank 0 reports, once
    ckpt = load_checkpoint(str(tmp_path / "ctrlc.safetensors"))
    assert 2 <= ckpt.meta["step"] < 12 and not ckpt.meta["complete"]
    assert ckpt.meta["step_in_epoch"] == 0 or {"rng.augment.0", "rng.augment.1"} <= set(ckpt.tensors)
    rc, out = _torchrun(["RE_TRAIN", "--model_path", str(tmp_path / "ctrlc.safetensors")], tmp_path)
    assert rc == 0 and load_checkpoint(str(tmp_path / "ctrlc.safetensors")).meta["step"] == 12, out


def test_a_data_error_on_the_loading_rank_ends_every_rank(tmp_path):
    rc, out = _torchrun(["TRAIN", "--data", str(tmp_path / "missing.npz"), "--name", "nodata"], tmp_path, timeout=120)
    assert rc != 0 and out.count("error: failed: DataError") == 1, out  # rank 0's own message ...
    assert "rank 0 failed to load the data: DataError" in out, out  # ... and rank 1 says why it stopped too
    assert not os.path.exists(tmp_path / "nodata.safetensors")


@pytest.mark.parametrize("world", [1, 2])
def test_the_loss_rejects_a_global_batch_of_one(world):
    z = torch.randn(1, 4)
    from vicreg.core.loss import vicreg_loss

    if world == 1:
        with pytest.raises(ValueError, match="at least 2"):
            vicreg_loss(z, z)
    else:  # one row per rank is fine when the gathered batch has two
        terms = vicreg_loss(z, z, gather=lambda t: torch.cat([t, t + 1]))
        assert torch.isfinite(terms.total)
