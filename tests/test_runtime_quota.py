"""vicreg.core.runtime.available_cpus: the CPUs this process may really use (affinity, cgroup v1/v2 quota),
and that the app's settings and a training run take their torch threads from it."""
import json
import os
import subprocess
import sys

import pytest
from app_fixtures import demo_pair  # noqa: F401

from bench.harness import ROOT
from vicreg.core import runtime
from vicreg.core.runtime import available_cpus, cgroup_cpu_quota

FOUR = {0, 1, 2, 3}


def cgroup(tmp_path, files: dict[str, str], own: str = "0::/") -> tuple[str, str]:
    """A fake cgroup mount with `files` (relative path -> content) and a /proc/self/cgroup saying `own`."""
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(own + "\n")
    return str(root), str(proc)


@pytest.mark.parametrize("files, own, expected", [
    ({}, "0::/", 4),  # no quota: the affinity mask
    ({"cpu.max": "max 100000"}, "0::/", 4),  # v2, unlimited
    ({"cpu.max": "150000 100000"}, "0::/", 1),  # v2, 1.5 CPUs: rounded down
    ({"cpu.max": "200000 100000"}, "0::/", 2),
    ({"cpu.max": "800000 100000"}, "0::/", 4),  # a quota above the affinity: the affinity
    ({"cpu.max": "50000 100000"}, "0::/", 1),  # half a CPU: at least 1
    ({"a/b/cpu.max": "200000 100000", "a/cpu.max": "300000 100000"}, "0::/a/b", 2),  # the process's own cgroup
    ({"a/cpu.max": "100000 100000", "a/b/cpu.max": "max 100000"}, "0::/a/b", 1),  # an ancestor's limit holds
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/", 4),  # v1, unlimited
    ({"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/", 2),  # v1, 2.5 CPUs
    ({"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "100000", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000"},
     "4:cpu,cpuacct:/docker/x", 1),
    ({"memory/m/cpu.max": "100000 100000"}, "4:memory:/m", 4),  # another controller's folder is not read
    ({"cpu.max": "garbage"}, "0::/", 4),  # unreadable values are no limit
])
def test_quota_files(tmp_path, files, own, expected):
    root, proc = cgroup(tmp_path, files, own)
    assert available_cpus(FOUR, root, proc) == expected


def test_affinity_and_missing_cgroup(tmp_path, monkeypatch):
    assert available_cpus({5}, str(tmp_path / "none"), str(tmp_path / "none")) == 1
    assert available_cpus(set(), str(tmp_path / "none"), str(tmp_path / "none")) == 1  # never 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 2, 4})  # as taskset -c 0,2,4 would
    monkeypatch.setattr(runtime, "CGROUP_ROOT", str(tmp_path / "none"))
    assert available_cpus() == 3
    assert cgroup_cpu_quota(str(tmp_path / "none"), str(tmp_path / "none")) is None


def test_make_runtime_threads_zero_means_available(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    try:
        torch.set_num_threads(2)
        runtime.make_runtime("cpu", "fp32", threads=0)
        assert torch.get_num_threads() == 1
        runtime.make_runtime("cpu", "fp32", threads=2)  # an explicit count wins
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


CHILD = r"""
import json, os, sys, torch
from services.settings import Settings
from services.studio import Studio
from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.runfiles.events import StepEvent
from vicreg.training.train import train
torch.set_num_threads(2)  # what the run must undo: threads=0 means the CPUs this process may use
settings = Settings.from_env({})
out = {"affinity": len(os.sched_getaffinity(0)), "settings": settings.threads, "studio": Studio(settings).threads}
cfg = TrainConfig(epochs=1, batch_size=16, train_subset=32, knn_test=0, data=sys.argv[1], checkpoint_dir=sys.argv[2],
                  name="t", model=ModelConfig(projector="64-64"), threads=0, device="cpu", precision="fp32")
for ev in train(cfg):
    if isinstance(ev, StepEvent):
        out["train"] = torch.get_num_threads()
    end = ev
out["end"] = end.status
print(json.dumps(out))
"""


def test_one_cpu_under_taskset(tmp_path, demo_pair):  # noqa: F811
    """A real process pinned to one CPU: the app's settings and a training run use 1 thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VICREG_", "OMP_", "MKL_"))}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", CHILD, demo_pair[1], str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"affinity": 1, "settings": 1, "studio": 1, "train": 1, "end": "finished"}, out
