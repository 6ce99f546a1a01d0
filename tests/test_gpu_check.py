"""The GPU check (bench/gpu_check.sh) runs every part of itself on a CPU, at sizes a CPU finishes in seconds, so
that the first machine with a GPU gets its table from one call."""
import json
import os
import subprocess

import torch

from bench.gpu_check import SMALL, step_rates, summary_counts, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pytest_summaries_read_as_counts():
    assert summary_counts("3 passed, 9 skipped in 4.20s") == {"passed": 3, "skipped": 9}
    assert summary_counts("1 failed, 2 passed, 1 error in 9.0s") == {"failed": 1, "passed": 2, "error": 1}
    assert summary_counts("ImportError: no module named torch") == {"error": 1}  # unreadable: never a pass


def test_the_small_check_runs_every_part_on_a_cpu_and_prints_one_table(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "VICREG_DATA": str(tmp_path / "none"), "OMP_NUM_THREADS": "1"}  # the embedded sample
    # compiling takes minutes on a CPU: the compiled step is exercised below with torch.compile standing in
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--small", "--no_tests", "--no_compile", "--json", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(out.read_text())
    step, epoch = figures["step"], figures["epoch"]
    assert figures["device"].startswith("CPU") and figures["batch"] == 16 and figures["tests"] == {"left out": 1}
    assert step["eager_pairs_per_s"] > 0 and "compiled_pairs_per_s" not in step
    assert "peak_gib" not in step  # no GPU memory to report on a CPU
    assert epoch["pairs_per_s"] > 0 and 0 <= epoch["linear"] <= 1 and 0 <= epoch["knn"] <= 1
    assert figures["data"].endswith("cifar10_sample.npz")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| check") and lines == table(figures).splitlines()
    assert not any("torch.compile" in line for line in lines)
    assert any("peak GPU memory" in line and "n/a (no GPU)" in line for line in lines)
    assert any(line.startswith("| EVALUATE after it") and "linear" in line and "kNN" in line for line in lines)
    # the table's line for the step is this run's figure
    assert f"{step['eager_pairs_per_s']:.1f} pairs/s" in r.stdout


def test_the_full_check_is_sized_for_the_gpu_preset():
    from bench.gpu_check import FULL
    from vicreg.core.config import TrainConfig
    gpu = TrainConfig.from_preset("gpu")
    assert FULL["batch"] == gpu.batch_size and FULL["width"] == gpu.model.width and FULL["images"] == 0


def test_the_compiled_step_is_timed_after_its_compilation_and_compared_with_eager(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)  # stands in: same module
    step = step_rates(SMALL, compiled=True)
    assert len(compiled) == 1 and step["compile_s"] > 0
    assert step["eager_pairs_per_s"] > 0 and step["compiled_pairs_per_s"] > 0
    line = next(line for line in table({"device": "x", "batch": 16, "data": "d", "tests": {"passed": 3}, "step": step,
                                        "epoch": {"epoch_s": 1, "pairs_per_s": 2, "linear": 0.5, "knn": 0.25}})
                .splitlines() if "torch.compile" in line)
    ratio = step["compiled_pairs_per_s"] / step["eager_pairs_per_s"]
    assert f"{step['compiled_pairs_per_s']:.1f} pairs/s ({ratio:.2f}x; compiled in" in line
