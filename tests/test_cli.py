"""The four original modes on small real CIFAR-10 data, end to end in subprocesses (the error cases call main()
in this process, and two of them also run as commands).

The module trains one small checkpoint with the original tool's TRAIN command (plus small-data
options), continues it with the original tool's RE_TRAIN command verbatim, then EVALUATEs and runs
INFERENCE on the result. The data comes from VICREG_DATA, as the original commands give no --data.
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import save_file

from vicreg.runfiles.checkpoint import load_checkpoint, read_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 2  # of the first run: 128 images / batch 32 = 4 steps per epoch


def cli(*args, cwd, env_extra=None):
    # the original tool's commands stay verbatim (device auto); hiding GPUs pins them to the CPU, whose
    # figures (a log line every step, exact resume at rtol 1e-5) these tests assert
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": "", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vicreg", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def trained(mini_cifar, tmp_path_factory):
    """`TRAIN --name my_model.pth` (the original tool's name style) in a fresh working folder."""
    work = tmp_path_factory.mktemp("cli")
    env = {"VICREG_CACHE": str(work / "cache"), "VICREG_DATA": mini_cifar}
    r = cli("TRAIN", "--epochs", str(EPOCHS), "--batch_size", "32", "--train_subset", "128", "--name", "my_model.pth",
            cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    return work, env, r


@pytest.fixture(scope="module")
def v2(trained):
    """The original tool's README command, verbatim: one more epoch from the finished checkpoint into v2."""
    work, env, _ = trained
    first = work / "checkpoints" / "my_model.safetensors"
    before = _sha(first)
    r = cli("RE_TRAIN", "--model_path", "checkpoints/my_model.pth", "--epochs", "1", "--name", "v2", cwd=work,
            env_extra=env)
    return work, env, r, before


def test_train_writes_checkpoint_sidecar_and_metrics(trained):
    work, _, r = trained
    ck = work / "checkpoints" / "my_model.safetensors"
    meta = read_meta(str(ck))
    assert (meta["epoch"], meta["step"], meta["step_in_epoch"], meta["complete"]) == (EPOCHS, 4 * EPOCHS, 0, True)
    assert meta["config"]["train_subset"] == 128 and meta["config"]["batch_size"] == 32
    side = json.loads((work / "checkpoints" / "my_model.json").read_text())
    assert side["epoch"] == EPOCHS and "optimizer" not in side
    lines = [json.loads(line) for line in (work / "checkpoints" / "my_model.metrics.jsonl").read_text().splitlines()]
    # the kNN monitor's untrained figure first (the chart's baseline), then each epoch's
    assert [e["kind"] for e in lines] == ["start", "watch"] + (["step"] * 4 + ["epoch"]) * EPOCHS + ["end"]
    assert lines[1]["step"] == 0 and 0 <= lines[1]["knn_top1"] <= 1 and lines[1]["guess"] is None
    assert [e["step"] for e in lines if e["kind"] == "step"] == list(range(1, 4 * EPOCHS + 1))
    assert f"finished: trained {EPOCHS} epochs" in r.stdout and "kNN top-1" in r.stdout


def test_re_train_n_more_epochs_into_a_new_name_leaves_the_first_file(v2):
    work, _, r, before = v2
    assert r.returncode == 0, r.stderr
    assert "resuming v2" in r.stdout and f"epochs {EPOCHS + 1}-{EPOCHS + 1}" in r.stdout
    assert f"finished: trained {EPOCHS + 1} epochs" in r.stdout
    meta = read_meta(str(work / "checkpoints" / "v2.safetensors"))
    assert (meta["epoch"], meta["step"], meta["complete"], meta["config"]["epochs"]) == (
        EPOCHS + 1, 4 * (EPOCHS + 1), True, EPOCHS + 1)
    assert meta["config"]["name"] == "v2" and meta["config"]["train_subset"] == 128  # the recipe came along
    first = work / "checkpoints" / "my_model.safetensors"
    assert _sha(first) == before and read_meta(str(first))["epoch"] == EPOCHS
    steps = [json.loads(line) for line in (work / "checkpoints" / "v2.metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in steps if e["kind"] == "step"] == [9, 10, 11, 12]


def test_re_train_of_a_finished_run_without_epochs_says_what_to_do(trained):
    work, env, _ = trained
    r = cli("RE_TRAIN", "--model_path", "checkpoints/my_model.safetensors", cwd=work, env_extra=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"error: my_model has finished its {EPOCHS} planned epochs" in r.stderr
    assert "RE_TRAIN --epochs N trains N more" in r.stderr  # what to do instead


def test_re_train_without_epochs_finishes_the_planned_run(trained, tmp_path):
    """A checkpoint that has done 1 of 2 planned epochs: RE_TRAIN alone trains exactly the second."""
    work, env, _ = trained
    ck = load_checkpoint(str(work / "checkpoints" / "my_model.safetensors"))
    meta = {**ck.meta, "epoch": 1, "step": 4, "complete": False}  # as if it had stopped after epoch 1
    save_file(ck.tensors, str(tmp_path / "half.safetensors"), metadata={"vicreg": json.dumps(meta)})
    r = cli("RE_TRAIN", "--model_path", str(tmp_path / "half.safetensors"), cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "resuming half" in r.stdout and "epochs 2-2" in r.stdout and "finished: trained 2 epochs" in r.stdout
    done = read_meta(str(tmp_path / "half.safetensors"))  # no --name: the same file
    assert (done["epoch"], done["step"], done["config"]["epochs"]) == (2, 8, 2)


def test_evaluate_the_continued_model_on_a_packed_dataset(v2, packed_cifar):
    work, env, r_v2, _ = v2
    assert r_v2.returncode == 0, r_v2.stderr
    r = cli("EVALUATE", "--model_path", "checkpoints/v2.pth", "--output", "report.json", cwd=work,
            env_extra={**env, "VICREG_DATA": packed_cifar})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-2])  # the summary line, before "report -> ..."
    assert 0.1 <= res["linear_top1"] <= 1.0 and 0.05 <= res["knn_top1"] <= 1.0 and len(res["per_class"]) == 10
    assert res["model"] == "checkpoints/v2.pth"
    assert "linear probe top-1" in r.stdout and "kNN (k=200, T=0.1)" in r.stdout
    full = json.loads((work / "report.json").read_text())
    assert (full["n_train"], full["n_test"]) == (500, 200) and sum(map(sum, full["confusion"])) == 200
    assert full["linear_top1"] == res["linear_top1"]


def test_inference_on_a_few_files_with_the_continued_model(v2, mini_cifar):
    work, env, r_v2, _ = v2
    assert r_v2.returncode == 0, r_v2.stderr
    cat = os.path.join(mini_cifar, "test", "cat")
    files = [os.path.join(cat, f) for f in sorted(os.listdir(cat))[:3]]
    r = cli("INFERENCE", "--model_path", "checkpoints/v2.pth", "--images", *files, cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    emb = np.load(work / "checkpoints" / "v2.embeddings.npy")
    assert emb.shape == (3, 512) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert "embedded 3 image file(s): 3 x 512 float32" in r.stdout
    assert not np.allclose(emb[0], emb[1])  # different images, different embeddings


def test_inference_of_the_test_set_matches_single_files(trained, mini_cifar):
    work, env, _ = trained
    ck = str(work / "checkpoints" / "my_model.safetensors")
    r = cli("INFERENCE", "--model_path", ck, cwd=work, env_extra=env)
    assert r.returncode == 0, r.stderr
    emb = np.load(work / "checkpoints" / "my_model.embeddings.npy")
    assert emb.shape == (300, 512) and emb.dtype == np.float32 and np.isfinite(emb).all() and emb.std() > 0
    img = os.path.join(mini_cifar, "test", "cat", sorted(os.listdir(os.path.join(mini_cifar, "test", "cat")))[0])
    r = cli("INFERENCE", "--model_path", ck, "--images", img, "--output", str(work / "one.npy"), cwd=work,
            env_extra=env)
    assert r.returncode == 0, r.stderr
    assert np.load(work / "one.npy").shape == (1, 512)
    assert np.allclose(np.load(work / "one.npy")[0], emb[90], atol=1e-3)  # cat is class 3: rows 90..119


ERRORS = [
    (["FLY"], "unknown mode"),
    (["EVALUATE"], "needs --model_path"),
    (["INFERENCE"], "needs --model_path"),
    (["RE_TRAIN", "--model_path", "nope.safetensors"], "checkpoint not found"),
    (["TRAIN", "--name", "../../etc/evil"], "invalid checkpoint name"),
    (["EVALUATE", "--model_path", "garbage.safetensors"], "cannot read checkpoint"),
    (["TRAIN", "--epochs", "x"], "invalid int value"),
    # a packed dataset path never falls back to torchvision's download, so this holds online too
    (["TRAIN", "--data", "/nonexistent/place.npz", "--epochs", "1"],
     "packed dataset /nonexistent/place.npz does not exist"),
    (["INFERENCE", "--random_init", "--images", "missing.png"], "no such image"),
    (["TRAIN", "--var_coeff", "-1"], "loss weights must be 0 or positive, got invariance 25.0, variance -1.0"),
    (["TRAIN", "--preset", "nope"], "unknown preset 'nope'"),
]


@pytest.mark.parametrize("args,msg", ERRORS)
def test_errors_are_one_line_with_a_failure_status(tmp_path, monkeypatch, capsys, args, msg):
    """`python -m vicreg` is `sys.exit(main())`: main's status and stderr are the command's (checked in a real
    process below). In this process, as a fresh interpreter per case cost about 2 s each."""
    from vicreg.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x01\x02" * 40)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("args,msg", [ERRORS[0], ERRORS[6]])  # a mode error and a parser error
def test_an_error_reaches_the_shell_as_one_line_and_status_2(tmp_path, args, msg):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert msg in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_throughput_benchmark_lives_in_bench_not_in_the_package():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "throughput.py"), "--help"], cwd="/",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: python bench/throughput.py" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-c", "import vicreg.bench"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "No module named 'vicreg.bench'" in r.stderr


def test_options_set_fields_by_dotted_name_and_zero_unsets():
    """TrainConfig.with_values is the CLI's (and the app's) one rule: dotted names, 0 = unset for lr and
    train_subset, values converted to the field's type."""
    from vicreg.orchestration.cli import build_parser, given_options, train_config

    args = build_parser().parse_args(["TRAIN", "--preset", "cpu90", "--lr", "0", "--train_subset", "0",
                                      "--var_coeff", "0", "--view_size", "16", "--epochs", "3"])
    assert given_options(args, ["lr", "var_coeff", "view_size", "seed"]) == {
        "lr": 0.0, "loss.var_coeff": 0.0, "augment.view_size": 16}  # seed was not given
    cfg = train_config(args)
    assert (cfg.lr, cfg.train_subset, cfg.loss.var_coeff, cfg.augment.view_size, cfg.epochs) == (None, None, 0.0, 16, 3)
    assert (cfg.optimizer, cfg.batch_size, cfg.get("loss.inv_coeff"), cfg.get("augment.view_size")) == (
        "adamw", 64, 25.0, 16)  # the rest is the preset's
    assert cfg.shown(["lr", "train_subset", "epochs"]) == {"lr": 0, "train_subset": 0, "epochs": 3}
    with pytest.raises(ValueError, match="epochs must be a whole number, got 2.5"):
        cfg.with_values({"epochs": 2.5})
    with pytest.raises(ValueError, match="unknown config field 'loss.nope'"):
        cfg.with_values({"loss.nope": 1})
    assert cfg.with_values({"augment.scale": "0.3:0.9"}).augment.scale == (0.3, 0.9)  # the command line's lo:hi
    assert cfg.with_values({"augment.scale": [0.1, 0.5]}).augment.scale == (0.1, 0.5)
    with pytest.raises(ValueError, match=r"augment.scale must be two numbers as lo:hi \(e.g. 0.2:1.0\), got '0.3'"):
        cfg.with_values({"augment.scale": "0.3"})


@pytest.mark.parametrize("preset", ["quick_demo", "cpu90", "cpu150", "gpu"])
def test_train_args_give_back_the_same_config(preset, tmp_path):
    """What the app runs under torchrun: TRAIN with every option, which rebuilds the config exactly."""
    from vicreg.core.config import TrainConfig
    from vicreg.orchestration.cli import build_parser, train_args, train_config

    cfg = TrainConfig.from_preset(preset).with_values({"loss.var_coeff": 0, "name": "run", "lr": 0.05,
                                                       "data": str(tmp_path / "data dir"), "knn_train": 123})
    args = train_args(cfg)
    assert args[0] == "TRAIN" and "--knn_train=123" in args and f"--data={tmp_path / 'data dir'}" in args
    assert train_config(build_parser().parse_args(args)) == cfg
    with pytest.raises(ValueError, match=r"cannot all be given on the command line \(momentum\)"):
        train_args(cfg.with_values({"momentum": 0.5}))


def test_resume_args_continue_the_plan_or_train_more():
    from vicreg.core.config import TrainConfig
    from vicreg.orchestration.cli import resume_args

    cfg = TrainConfig.from_preset("quick_demo").with_values({"name": "q", "checkpoint_dir": "ck", "device": "cpu",
                                                             "threads": 1, "data": "d.npz"})
    meta = {"config": cfg.to_dict(), "epoch": 1}
    args = resume_args(cfg, "ck/q.safetensors", meta)
    assert args[:3] == ["RE_TRAIN", "--model_path=ck/q.safetensors", "--checkpoint_dir=ck"]
    assert "--device=cpu" in args and "--threads=1" in args and "--data=d.npz" in args
    assert not [a for a in args if a.startswith(("--epochs", "--name"))]  # finish the planned 3 epochs, same file
    more = resume_args(cfg.with_values({"epochs": 5, "name": "q2"}), "ck/q.safetensors", meta)
    assert "--epochs=4" in more and "--name=q2" in more  # 4 more after the 1 done: 5 in all


def test_sigterm_stops_after_the_step_with_a_checkpoint_that_resumes(mini_cifar, tmp_path):
    """`kill` (SIGTERM), as a container's stop or a scheduler sends it, saves like Ctrl-C: a mid-run checkpoint
    that RE_TRAIN finishes, not a run lost back to its last epoch."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": "", "VICREG_CACHE": str(tmp_path / "cache"),
           "VICREG_DATA": mini_cifar, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "vicreg", "TRAIN", "--epochs", "3", "--batch_size", "32",
                          "--train_subset", "128", "--knn_test", "0", "--threads", "1", "--width", "8",
                          "--name", "term"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, t0 = tmp_path / "checkpoints" / "term.metrics.jsonl", time.time()
    try:
        while time.time() - t0 < 300 and p.poll() is None:
            if metrics.exists() and '"step": 2,' in metrics.read_text():
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = out.replace("\r", "\n")
    assert p.returncode == 0 and "stopping after this step" in out and "stopped: stopped at epoch" in out, out
    meta = load_checkpoint(str(tmp_path / "checkpoints" / "term.safetensors")).meta
    assert 2 <= meta["step"] < 12 and not meta["complete"]
    r = cli("RE_TRAIN", "--model_path", "checkpoints/term.safetensors", cwd=tmp_path,
            env_extra={"VICREG_CACHE": str(tmp_path / "cache"), "VICREG_DATA": mini_cifar})
    assert r.returncode == 0, r.stderr
    assert read_meta(str(tmp_path / "checkpoints" / "term.safetensors"))["step"] == 12
