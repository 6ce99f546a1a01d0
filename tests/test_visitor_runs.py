"""Visitors' runs cannot fill the disk (services/visitors.py): only the newest VICREG_VISITOR_KEEP visitor
runs are kept, within VICREG_VISITOR_MB; nothing else in the checkpoint folder is ever touched."""
import os
import shutil
import time

from app_fixtures import demo_pair  # noqa: F401

from services.settings import Settings
from services.studio import Studio
from services.visitors import PREFIX, VisitorRuns, prune, visitor_name, visitor_runs
from ui.layout import Handlers
from vicreg.core.presets import DEFAULT_MODEL
from vicreg.orchestration.jobs import TrainingJob

MB = 1024 * 1024
OTHERS = (f"{DEFAULT_MODEL}.safetensors", f"{DEFAULT_MODEL}.json", "admin_run.safetensors", "admin_run.json",
          "admin_run.metrics.jsonl", "visitorish.safetensors", "visitor-notes.txt")


def others(folder) -> dict:
    """Files that are not visitor runs, with their sizes and times (they must never change)."""
    out = {}
    for name in OTHERS:
        path = folder / name
        if not path.exists():
            path.write_bytes(os.urandom(1000))
        st = path.stat()
        out[name] = (st.st_size, st.st_mtime_ns)
    return out


def fake_run(folder, stem: str, mb: float, age: float) -> None:
    for suffix, share in ((".safetensors", 0.9), (".json", 0.05), (".metrics.jsonl", 0.05)):
        path = folder / f"{stem}{suffix}"
        path.write_bytes(b"\0" * int(mb * MB * share))
        os.utime(path, (time.time() - age, time.time() - age))


def test_names():
    a, b = visitor_name("my run"), visitor_name("my run")
    assert a.startswith("visitor-my_run-") and len(a) == len("visitor-my_run-") + 6 and a != b
    assert visitor_name("visitor-x").startswith("visitor-x-")  # not visitor-visitor-
    for hostile in ("../../etc/passwd", DEFAULT_MODEL, "", None, ".hidden", "a/b\\c", "x\nnewline", "é" * 300):
        name = visitor_name(hostile)
        assert name.startswith(PREFIX) and "/" not in name and "\\" not in name and "." not in name, name
        assert len(name) <= 60 and name.isascii() and name.isprintable()


def test_prune_count_size_and_others(tmp_path):
    before = others(tmp_path)
    for k, mb in enumerate([1, 1, 4, 1, 1]):  # k = 0 is the newest
        fake_run(tmp_path, f"visitor-r{k}", mb, age=10 * k)
    (tmp_path / "visitor-orphan.metrics.jsonl").write_bytes(b"x")  # a run that failed before saving: oldest
    os.utime(tmp_path / "visitor-orphan.metrics.jsonl", (1, 1))
    os.symlink(tmp_path / "admin_run.safetensors", tmp_path / "visitor-link.safetensors")
    assert [r.stem for r in visitor_runs(str(tmp_path))] == ["visitor-r0", "visitor-r1", "visitor-r2", "visitor-r3",
                                                             "visitor-r4", "visitor-orphan"]
    # 3 by count, but r2 (4 MB) does not fit in 5 MB after r0 and r1: it and every older run go
    assert prune(str(tmp_path), 3, 5 * MB) == ["visitor-r2", "visitor-r3", "visitor-r4", "visitor-orphan"]
    assert sorted(p.name for p in tmp_path.glob("visitor-r*")) == [
        "visitor-r0.json", "visitor-r0.metrics.jsonl", "visitor-r0.safetensors",
        "visitor-r1.json", "visitor-r1.metrics.jsonl", "visitor-r1.safetensors"]
    assert others(tmp_path) == before and os.path.islink(tmp_path / "visitor-link.safetensors")
    assert prune(str(tmp_path), 1, 100 * MB) == ["visitor-r1"]
    assert prune(str(tmp_path), 0, 100 * MB) == ["visitor-r0"]
    assert others(tmp_path) == before and visitor_runs(str(tmp_path)) == []


def test_before_a_run_room_is_made(tmp_path):
    for k in range(3):
        fake_run(tmp_path, f"visitor-r{k}", 2, age=10 * k)
    runs, job = VisitorRuns(str(tmp_path), keep=3, max_mb=5), TrainingJob()
    # one run fewer, and the largest run's size (2 MB) set aside: only r0 (2 MB) fits in 5 - 2 MB
    assert runs.before_run(job) == ["visitor-r1", "visitor-r2"]
    assert runs.after_run(job) == []


def test_five_visitor_runs_in_a_row(tmp_path, demo_pair):  # noqa: F811
    """A server reachable by others with no admin secret: every caller is a visitor. Five tiny visitor
    runs through the Train handler keep at most 3 visitor runs within the size; the shipped model, an
    admin's checkpoint and other files stay; nothing is deleted while a run is in progress."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shipped = folder / f"{DEFAULT_MODEL}.safetensors"  # the shipped model, in its usual folder
    shutil.copy(demo_pair[0], shipped)
    if os.path.isfile(demo_pair[0][: -len(".safetensors")] + ".json"):
        shutil.copy(demo_pair[0][: -len(".safetensors")] + ".json", folder / f"{DEFAULT_MODEL}.json")
    before, repo_model = others(folder), os.stat(demo_pair[0]).st_mtime_ns
    studio = Studio(Settings(data_root=demo_pair[1], sample=demo_pair[1], default_checkpoint=str(shipped),
                             checkpoint_dir=str(folder), cache_dir=str(tmp_path / "cache"), host="0.0.0.0", threads=1,
                             visitor_keep=3, visitor_mb=1024))
    assert studio.access.public and not studio.access.is_admin("")
    job = TrainingJob(data_loader=studio.training_data)
    h = Handlers.create(studio, job)
    knobs = dict(preset="quick_demo", name="mine", epochs=1, batch_size=32, optimizer="lars", lr=0, train_subset=128,
                 inv_coeff=25, var_coeff=25, cov_coeff=1, knn_train=0, knn_test=0, warmup_epochs=0.5, threads=1,
                 device="cpu", secret="")
    names = []
    for k in range(5):
        out = h.train.start(**knobs)
        assert out.message.startswith(f"✅ run {k + 1} started") and "<code>visitor-mine-" in out.message, out.message
        assert studio.visitors.after_run(job) == studio.visitors.before_run(job) == []  # a run is in progress
        assert job.wait(300) and job.snapshot().status == "finished", job.snapshot().end
        names.append(os.path.basename(job.snapshot().end.checkpoint)[: -len(".safetensors")])
        assert names[-1].startswith("visitor-mine-")
        h.train.poll(None, None, None)  # a page's status poll: the run's end already pruned the old runs
        kept = visitor_runs(str(folder))
        assert [r.stem for r in kept] == names[::-1][:3]  # the newest three
        assert sum(r.size for r in kept) <= 1024 * MB
        for r in kept:
            assert sorted(os.path.basename(p)[len(r.stem):] for p in r.files) == [".json", ".metrics.jsonl",
                                                                                  ".safetensors"]
    print(f"\none visitor run's files: {kept[0].size / MB:.1f} MB")
    assert others(folder) == before and os.stat(demo_pair[0]).st_mtime_ns == repo_model
    assert len(set(names)) == 5
