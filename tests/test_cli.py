"""The four original modes on a small real CIFAR-10 folder, end to end in subprocesses."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": ROOT, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vicreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(mini_cifar, tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    env = {"VICREG_CACHE": str(work / "cache")}
    r = cli("TRAIN", "--epochs", "2", "--batch_size", "32", "--data", mini_cifar, "--name", "vicreg_model.pth",
            "--train_subset", "128", cwd=work, env_extra=env)
    return work, env, r


def test_train_writes_checkpoint_and_metrics(trained):
    work, _, r = trained
    assert r.returncode == 0, r.stderr
    assert (work / "checkpoints" / "vicreg_model.safetensors").exists()
    assert (work / "checkpoints" / "vicreg_model.json").exists()
    lines = (work / "checkpoints" / "vicreg_model.metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in l for l in lines) == 2
    assert "finished: trained 2 epochs" in r.stdout and "kNN top-1" in r.stdout


def test_re_train_continues_at_next_epoch(trained, mini_cifar):
    work, env, _ = trained
    ck = str(work / "checkpoints" / "vicreg_model.safetensors")
    r = cli("RE_TRAIN", "--model_path", ck, "--epochs", "3", "--data", mini_cifar, cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "resuming vicreg_model" in r.stdout and "epochs 3-3" in r.stdout and "epoch 3:" in r.stdout
    r = cli("RE_TRAIN", "--model_path", ck, "--data", mini_cifar, cwd=work, env_extra=env)
    assert r.returncode == 2 and "already has 3 of 3 epochs" in r.stderr


def test_evaluate_prints_probe_and_knn(trained, mini_cifar):
    work, env, _ = trained
    ck = str(work / "checkpoints" / "vicreg_model.safetensors")
    r = cli("EVALUATE", "--model_path", ck, "--data", mini_cifar, "--probe_epochs", "20", cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    import json

    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0.1 <= res["linear_top1"] <= 1.0 and 0.05 <= res["knn_top1"] <= 1.0 and len(res["per_class"]) == 10
    assert "linear probe top-1" in r.stdout and "kNN (k=200, T=0.1)" in r.stdout


def test_inference_writes_512d_embeddings(trained, mini_cifar):
    work, env, _ = trained
    ck = str(work / "checkpoints" / "vicreg_model.safetensors")
    r = cli("INFERENCE", "--model_path", ck, "--data", mini_cifar, cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    emb = np.load(work / "checkpoints" / "vicreg_model.embeddings.npy")
    assert emb.shape == (300, 512) and emb.dtype == np.float32 and np.isfinite(emb).all() and emb.std() > 0
    img = os.path.join(mini_cifar, "test", "cat", sorted(os.listdir(os.path.join(mini_cifar, "test", "cat")))[0])
    r = cli("INFERENCE", "--model_path", ck, "--images", img, "--output", str(work / "one.npy"), cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert np.load(work / "one.npy").shape == (1, 512)
    assert np.allclose(np.load(work / "one.npy")[0], emb[90], atol=1e-3)  # cat is class 3: rows 90..119


@pytest.mark.parametrize("args,msg", [
    (["FLY"], "unknown mode"),
    (["EVALUATE"], "needs --model_path"),
    (["INFERENCE"], "needs --model_path"),
    (["RE_TRAIN", "--model_path", "nope.safetensors"], "checkpoint not found"),
    (["TRAIN", "--name", "../../etc/evil"], "invalid checkpoint name"),
    (["EVALUATE", "--model_path", "garbage.safetensors"], "cannot read checkpoint"),
    (["TRAIN", "--epochs", "x"], "invalid int value"),
    (["TRAIN", "--data", "/nonexistent/place", "--epochs", "1"], "VICREG_DATA"),
    (["INFERENCE", "--random_init", "--images", "missing.png"], "no such image"),
])
def test_errors_are_one_line_and_nonzero(tmp_path, args, msg):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x01\x02" * 40)
    r = cli(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert msg in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_preset_fills_options_that_were_not_given():
    from vicreg.__main__ import _apply_preset, _config, build_parser

    args = build_parser().parse_args(["TRAIN", "--preset", "cpu30", "--epochs", "3"])
    _apply_preset(args)
    cfg = _config(args)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.train_subset, cfg.epochs, cfg.name) == ("adamw", 2e-3, 64, 42000, 3, "cpu30")
    r = cli("TRAIN", "--preset", "nope", cwd=ROOT)
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr
