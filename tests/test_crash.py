"""Crash safety: training is SIGKILLed at 22 distinct moments and every kill is survived.

One small real run (CLI subprocesses on 32 real CIFAR-10 images: 10 epochs of 2 steps, a kNN pass and
a checkpoint every epoch) is killed again and again by the VICREG_FAULT test hook (vicreg/runfiles/faults.py):
between steps, halfway through a metrics line, inside the kNN pass, halfway through a checkpoint's
temporary file, before its rename, between the rename and the sidecar, and during the checkpoint of a
requested stop (mid-epoch). Each kill is followed by RE_TRAIN from the last complete checkpoint, or by
TRAIN again while there is none yet. After every kill: the exit was SIGKILL, every checkpoint file
loads, the checkpoint is the one expected, the metrics file reads (a torn last line at most), and a
killed writer's temporary files are gone once the next run starts. The last RE_TRAIN finishes the run,
and its weights and every logged loss equal those of an uninterrupted run: resume is exact.
"""
import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import write_packed

from vicreg.runfiles.checkpoint import list_checkpoints, load_checkpoint, read_meta
from vicreg.runfiles.metrics import read_metrics

pytestmark = pytest.mark.reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, SPE = 10, 2  # 32 training images at batch 16: 2 steps per epoch, 20 in all
# 16-px training views, a narrow projector and ResNet-18 at an eighth of its width: what is killed is the run's
# bookkeeping (steps, lines, checkpoints, sidecars), which is the same at any width, and 22 runs stay quick
RUN = ["--epochs", str(EPOCHS), "--batch_size", "16", "--view_size", "16", "--projector", "64-64", "--width", "8",
       "--seed", "3"]
SETTINGS = ["--knn_test", "8", "--threads", "1", "--device", "cpu", "--precision", "fp32"]

# (VICREG_FAULT, the last complete checkpoint's (epoch, step) after the kill; None: none yet).
# Kill counts are per process: "kill@log:3" dies writing that process's third metrics line.
MOMENTS = [
    ("kill@step:1", None),  # before the first step
    ("kill@log:1", None),  # halfway through the start line
    ("kill@after_step:1", None),  # step 1's update done, its line not written
    ("kill@log:3", None),  # halfway through step 2's line
    ("kill@knn:1", None),  # inside epoch 1's kNN pass
    ("kill@ckpt_partial:1", None),  # epoch 1's checkpoint half written
    ("kill@ckpt_before_rename:1", None),  # written, not renamed
    ("kill@sidecar:1", (1, 2)),  # renamed, no sidecar yet: from here on RE_TRAIN
    ("kill@sidecar_partial:1", (2, 4)),  # epoch 2's sidecar half written
    ("kill@epoch_end:1", (3, 6)),  # saved, its epoch line not written
    ("kill@step:2", (3, 6)),  # between steps 7 and 8
    ("kill@log:2", (3, 6)),  # halfway through step 7's line
    ("kill@after_step:2", (3, 6)),  # step 8's update done
    ("kill@knn:2", (4, 8)),  # epoch 4 saved, killed in epoch 5's kNN pass
    ("kill@ckpt_partial:2", (5, 10)),  # epoch 5 saved, epoch 6's checkpoint half written
    ("kill@ckpt_before_rename:2", (6, 12)),
    ("stop:0:13,kill@ckpt_partial:1", (6, 12)),  # a stop after step 13: its mid-epoch checkpoint half written
    ("stop:0:13,kill@sidecar:1", (6, 13)),  # the mid-epoch checkpoint renamed
    ("kill@step:1", (6, 13)),  # resumed mid-epoch, killed before step 14
    ("kill@log:3", (7, 14)),  # halfway through epoch 7's line
    ("kill@sidecar:2", (9, 18)),  # epoch 8 saved whole, epoch 9 renamed without its sidecar
    ("kill@after_step:1", (9, 18)),  # step 19's update done
]


def _cli(work, args, fault=None) -> SimpleNamespace:
    """`python -m vicreg ARGS` in `work`; its pid, returncode (-9: SIGKILL), stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "VICREG_FAULT"}
    env.update(PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", VICREG_CACHE=str(work / "cache"),
               **({"VICREG_FAULT": fault} if fault else {}))
    p = subprocess.Popen([sys.executable, "-m", "vicreg", *args], cwd=work, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return SimpleNamespace(pid=p.pid, returncode=p.returncode, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, cifar):
    """32 train + 8 test real CIFAR-10 images in a packed .npz: loads in milliseconds, and the
    per-epoch kNN pass (the 32 as its bank, 8 queries) stays short."""
    return write_packed(tmp_path_factory.mktemp("crash_data") / "tiny.npz", cifar, 32, 8)


def _train(folder, data, fault=None):
    return _cli(folder, ["TRAIN", *RUN, *SETTINGS, "--data", data, "--name", "crash", "--checkpoint_dir", "ck"], fault)


def _re_train(folder, data, fault=None):
    return _cli(folder, ["RE_TRAIN", "--model_path", "ck/crash.safetensors", *SETTINGS, "--data", data], fault)


def _state(ck) -> tuple[int, int] | None:
    path = ck / "crash.safetensors"
    if not path.exists():
        return None
    meta = read_meta(str(path))
    return meta["epoch"], meta["step"]


def _check_folder(ck, killed_pid: int) -> list[str]:
    """Every checkpoint file loads, listings hide temporary files, and only the killed process's
    temporary files remain (the next run sweeps them); returns those."""
    names = sorted(os.listdir(ck))
    for name in names:
        if name.endswith(".safetensors") and not name.startswith("."):
            load_checkpoint(str(ck / name))  # raises when it does not load
    assert [os.path.basename(p) for p, _ in list_checkpoints(str(ck))] == (
        ["crash.safetensors"] if "crash.safetensors" in names else [])
    temps = [n for n in names if n.startswith(".")]
    assert all(re.search(rf"\.{killed_pid}-[0-9a-f]{{12}}\.tmp", n) for n in temps), (temps, killed_pid)
    return temps


def test_training_survives_kills_at_22_moments_and_resumes_exactly(tmp_path, tiny_npz):
    t0 = time.perf_counter()
    ref = tmp_path / "reference"
    ref.mkdir()
    r = _train(ref, tiny_npz)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "killed"
    work.mkdir()
    ck, metrics = work / "ck", work / "ck" / "crash.metrics.jsonl"
    survived, torn_seen, temps_seen = 0, 0, 0
    for i, (fault, expect) in enumerate(MOMENTS, 1):
        before = _state(ck)
        n_events = len(read_metrics(str(metrics))) if metrics.exists() else 0
        r = (_re_train if before else _train)(work, tiny_npz, fault)  # no checkpoint yet: TRAIN again
        where = f"moment {i} ({fault}, from {before})"
        assert r.returncode == -9, f"{where}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        temps_seen += len(_check_folder(ck, r.pid))
        assert _state(ck) == expect, where
        events = read_metrics(str(metrics))  # raises on anything but a torn last line
        torn = not metrics.read_bytes().endswith(b"\n")
        assert torn == fault.startswith("kill@log"), where
        torn_seen += torn
        starts = [e for e in events[n_events:] if e["kind"] == "start"]
        if starts:  # the run continued from the last complete checkpoint (TRAIN: from scratch)
            assert starts[0]["start_step"] == (before[1] if before else 0), where
        survived += 1
    r = _re_train(work, tiny_npz)
    assert r.returncode == 0, r.stderr
    assert f"finished: trained {EPOCHS} epochs" in r.stdout
    _check_folder(ck, -1)
    assert [n for n in os.listdir(ck) if n.startswith(".")] == []  # the last run swept the last kill's files
    final = load_checkpoint(str(ck / "crash.safetensors"))
    straight = load_checkpoint(str(ref / "ck" / "crash.safetensors"))
    assert (final.meta["step"], final.meta["epoch"], final.meta["complete"]) == (EPOCHS * SPE, EPOCHS, True)
    assert json.load(open(ck / "crash.json"))["step"] == EPOCHS * SPE
    differ = [k for k in straight.tensors if not torch.equal(final.tensors[k], straight.tensors[k])]
    assert sorted(final.tensors) == sorted(straight.tensors) and differ == []
    _check_logged_losses(read_metrics(str(metrics)), read_metrics(str(ref / "ck" / "crash.metrics.jsonl")))
    seconds = time.perf_counter() - t0
    print(f"\nkills survived {survived}/{len(MOMENTS)} ({torn_seen} torn metrics lines skipped, {temps_seen} "
          f"temporary files swept); final weights equal the uninterrupted run's; {seconds:.0f}s")


def _check_logged_losses(events, reference) -> None:
    """Every step was logged by some process, and each time with the uninterrupted run's figures."""
    ref = {e["step"]: e for e in reference if e["kind"] == "step"}
    logged = [e for e in events if e["kind"] == "step"]
    assert {e["step"] for e in logged} == set(ref) == set(range(1, EPOCHS * SPE + 1))
    for e in logged:
        assert (e["loss"], e["variance"], e["covariance"]) == tuple(ref[e["step"]][k] for k in
                                                                     ("loss", "variance", "covariance")), e["step"]
