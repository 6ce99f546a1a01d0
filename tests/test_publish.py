"""scripts/publish_space.py: which files a Space gets, and the Hub calls that send them.

Offline throughout: HfApi is replaced by a recorder (or by a class that fails if constructed), so no
test needs a network or a token.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from huggingface_hub.utils import filter_repo_objects

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = importlib.util.spec_from_file_location("publish_space", os.path.join(ROOT, "scripts", "publish_space.py"))
pub = importlib.util.module_from_spec(SPEC)
sys.modules["publish_space"] = pub  # dataclasses look their module up there
SPEC.loader.exec_module(pub)

SHIPPED, SIDECAR = pub.SHIPPED[:2]  # the shipped default model and its sidecar
SECRET = "correct horse battery staple"
NEVER = (".venv", "venv", "__pycache__", ".pytest_cache", ".gradio", ".cache", "runs", "data", "flagged", ".git")
# the smallest project copy the rules can be shown on: the shipped model, its sidecar, some code
MINIMAL = ("app.py", "README.md", "requirements.txt", ".gitattributes", ".gitignore", "checkpoints/.gitkeep",
           SHIPPED, SIDECAR, "vicreg/core/config.py")


class NoNetwork:
    def __init__(self, *_a, **_k):
        raise AssertionError("the dry run must not create an HfApi client")


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records every call, answers like the Hub would."""
    calls: list[tuple[str, tuple, dict]] = []

    def __init__(self, *_a, **_k):
        RecordingApi.calls = []

    def whoami(self, *a, **k):
        self.calls.append(("whoami", a, k))
        return {"name": "alice"}

    def create_repo(self, *a, **k):
        self.calls.append(("create_repo", a, k))
        return f"https://huggingface.co/spaces/{a[0]}"

    def add_space_secret(self, *a, **k):
        self.calls.append(("add_space_secret", a, k))

    def upload_folder(self, *a, **k):
        self.calls.append(("upload_folder", a, k))


def copy_project(dst, names=MINIMAL) -> str:
    for rel in names:
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dst, rel))
    return str(dst)


def write(root, rel: str, data: bytes = b"x") -> str:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return rel


def full_checkpoint(root, rel: str) -> str:
    """A real full (unpacked) checkpoint of a tiny model, with optimiser state and its sidecar."""
    import torch

    from vicreg.core.config import TrainConfig
    from vicreg.runfiles.checkpoint import save_checkpoint

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(3, 4)).sum().backward()
    opt.step()
    name = os.path.basename(rel).split(".")[0]
    meta = {"config": TrainConfig(name=name).to_dict(), "epoch": 1, "step": 1, "complete": True}
    save_checkpoint(os.path.join(root, rel), model, opt, meta)
    return rel


def plant(root) -> list[str]:
    """Files that must never reach a Space, planted in a project copy."""
    return [
        write(root, ".venv/lib/python3.11/site-packages/torch/__init__.py"),
        write(root, "services/__pycache__/access.cpython-311.pyc"),
        write(root, ".pytest_cache/v/cache/lastfailed"),
        write(root, ".gradio/flagged/log.csv"),
        write(root, ".cache/vicreg/cifar10.npz"),
        write(root, "flagged/log.csv"),
        write(root, "data/cifar10/train/cat/0.png"),
        write(root, "tests/artifacts/first_start.png"),
        write(root, "runs/cpu90/notes.txt"),
        full_checkpoint(root, "runs/cpu90/cpu90.safetensors"),
        full_checkpoint(root, "checkpoints/visitor-1.safetensors"),
        "checkpoints/visitor-1.json",
        write(root, "checkpoints/visitor-1.metrics.jsonl", b'{"step": 1}\n'),
        write(root, "checkpoints/mine.pth"),
        write(root, "assets/extra.safetensors"),
        write(root, "embeddings_test.npy"),
        write(root, ".env", b"HF_TOKEN=hf_secret"),
        write(root, "checkpoints/.cpu90.safetensors.4242-0123456789ab.tmp.safetensors"),
    ]


def test_dry_run_of_this_checkout_is_small_and_clean(monkeypatch, capsys):
    monkeypatch.setattr(pub, "HfApi", NoNetwork)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pub.main(["alice/vicreg-studio", "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = pub.plan(ROOT)
    files = [rel for rel, _ in plan.files]
    for rel in ("app.py", "README.md", "requirements.txt", ".gitattributes", "LICENSE", "docs/model_card.md",
                "assets/cifar10_sample.npz", SHIPPED, SIDECAR):
        assert rel in files, rel
    for rel in files:
        assert not set(rel.split("/")) & set(NEVER), rel
        assert not rel.startswith("tests/artifacts/") and not rel.endswith((".pyc", ".metrics.jsonl")), rel
        assert not rel.endswith(pub.CHECKPOINT_SUFFIXES) or rel == SHIPPED, rel
    assert plan.total <= 60_000_000
    # every file is listed with its size, then the total
    for rel, size in plan.files:
        assert f"{pub.human(size):>10}  {rel}\n" in out
    assert f"total: {pub.human(plan.total)} in {len(files)} files" in out


def test_the_shipped_default_is_the_apps_default():
    from services.settings import DEFAULT_CHECKPOINT

    assert os.path.relpath(DEFAULT_CHECKPOINT, ROOT).replace(os.sep, "/") == pub.SHIPPED_CHECKPOINT


@pytest.mark.parametrize("rel, kept", [
    ("app.py", True), ("vicreg/training/train.py", True), ("docs/space.md", True), ("assets/cifar10_sample.npz", True),
    (SHIPPED, True), (SIDECAR, True), ("tests/test_cli.py", True),
    (SIDECAR.replace(".json", ".metrics.jsonl"), False), ("checkpoints/my_model.safetensors", False),
    ("checkpoints/my_model.json", False), ("assets/model.pth", False), ("sub/.venv/x.py", False),
    ("ui/__pycache__/layout.cpython-311.pyc", False), ("runs/x.json", False), ("data/x.png", False),
    ("tests/artifacts/a.png", False), (".cache/vicreg/x.npz", False), ("services/.env", False),
    ("key.pem", False), ("tests/runs.py", True), ("database.py", True), ("docs/data/x.md", True),
])
def test_the_rule(rel, kept):
    assert (pub.skip_reason(rel) is None) == kept


def test_planted_files_stay_home_in_a_copy_without_git(tmp_path):
    root = copy_project(tmp_path / "proj")
    planted = plant(root)
    plan = pub.plan(root)
    assert plan.source == "walk"
    assert sorted(rel for rel, _ in plan.files) == sorted(MINIMAL)
    skipped = dict(plan.skipped)
    # pruned folders are never walked, so only the files of folders that are walked are listed as skipped
    for rel in planted:
        assert rel not in dict(plan.files), rel
    assert skipped["checkpoints/visitor-1.safetensors"] == "checkpoint other than the shipped default"
    assert skipped["checkpoints/mine.pth"] == "checkpoint other than the shipped default"
    assert skipped[".env"] == "may hold secrets"
    # what upload_folder itself would keep of everything on disk, given the allow and ignore lists
    on_disk = []
    for here, _, names in os.walk(root):
        on_disk += [os.path.relpath(os.path.join(here, n), root).replace(os.sep, "/") for n in names]
    assert len(on_disk) > len(MINIMAL) + 15
    allow = [pub.glob.escape(rel) for rel, _ in plan.files]
    kept = filter_repo_objects(on_disk, allow_patterns=allow, ignore_patterns=pub.ignore_patterns())
    assert sorted(kept) == sorted(MINIMAL)


def test_git_checkout_files_pass_the_same_rule(tmp_path):
    root = copy_project(tmp_path / "proj")
    plant(root)
    git = ["git", "-C", root, "-c", "safe.directory=*"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)  # .gitignore keeps most of the planted files out
    # files forced into the index are still left out by the rule
    forced = ["runs/cpu90/notes.txt", "services/__pycache__/access.cpython-311.pyc", ".venv/lib/python3.11/"
              "site-packages/torch/__init__.py", "checkpoints/visitor-1.safetensors", "tests/artifacts/first_start.png"]
    subprocess.run([*git, "add", "-f", *forced], check=True)
    write(root, "docs/new_page.md")  # new, not ignored: travels although not yet added
    plan = pub.plan(root)
    assert plan.source == "git"
    assert sorted(rel for rel, _ in plan.files) == sorted([*MINIMAL, "docs/new_page.md"])
    skipped = dict(plan.skipped)
    for rel in forced:
        assert rel in skipped, rel


def test_a_full_checkpoint_in_place_of_the_default_is_refused(tmp_path, monkeypatch, capsys):
    root = copy_project(tmp_path / "proj")
    full_checkpoint(root, SHIPPED)
    with pytest.raises(pub.PublishError, match=r"full \(resumable\) checkpoint"):
        pub.plan(root)
    monkeypatch.setattr(pub, "HfApi", NoNetwork)  # refused before any Hub call, dry run or not
    assert pub.main(["alice/studio", "--folder", root]) == 2
    err = capsys.readouterr().err
    assert f"{SHIPPED} is a full (resumable) checkpoint" in err and "Traceback" not in err


def test_a_sidecar_claiming_the_full_format_is_refused(tmp_path):
    root = copy_project(tmp_path / "proj")
    side = os.path.join(root, SIDECAR)
    with open(side) as f:
        meta = json.load(f)
    meta["packed"] = False
    with open(side, "w") as f:
        json.dump(meta, f)
    with pytest.raises(pub.PublishError, match="cannot be shipped.*sidecar"):
        pub.plan(root)
    write(root, SHIPPED, b"not a checkpoint")
    with pytest.raises(pub.PublishError, match="cannot be shipped"):
        pub.plan(root)


def test_upload_calls_the_hub_with_the_planned_files(tmp_path, monkeypatch, capsys):
    root = copy_project(tmp_path / "proj")
    plant(root)
    monkeypatch.setattr(pub, "HfApi", RecordingApi)
    monkeypatch.setattr(pub.getpass, "getpass", lambda _prompt="": SECRET)
    assert pub.main(["alice/studio", "--secret", "--private", "--folder", root]) == 0
    names = [c[0] for c in RecordingApi.calls]
    assert names == ["whoami", "create_repo", "add_space_secret", "upload_folder"]
    _, args, kw = RecordingApi.calls[1]
    assert args == ("alice/studio",)
    assert kw == {"repo_type": "space", "space_sdk": "gradio", "private": True, "exist_ok": True}
    _, args, _ = RecordingApi.calls[2]
    assert args == ("alice/studio", "VICREG_ADMIN_TOKEN", SECRET)
    _, args, kw = RecordingApi.calls[3]
    assert kw["repo_id"] == "alice/studio" and kw["repo_type"] == "space" and kw["folder_path"] == root
    assert sorted(kw["allow_patterns"]) == sorted(MINIMAL)
    assert ".venv/*" in kw["ignore_patterns"] and "*/__pycache__/*" in kw["ignore_patterns"]
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


def test_without_secret_no_secret_is_set_and_the_space_is_public(tmp_path, monkeypatch):
    root = copy_project(tmp_path / "proj")
    monkeypatch.setattr(pub, "HfApi", RecordingApi)
    monkeypatch.setattr(pub.getpass, "getpass", lambda _prompt="": pytest.fail("asked for a secret"))
    assert pub.main(["alice/studio", "--folder", root]) == 0
    assert [c[0] for c in RecordingApi.calls] == ["whoami", "create_repo", "upload_folder"]
    assert RecordingApi.calls[1][2]["private"] is False


@pytest.mark.parametrize("answers, message", [
    (["short", "short"], "at least 12 characters"),
    ([SECRET, SECRET + "x"], "the two entries differ"),
])
def test_a_bad_secret_stops_before_anything_is_created(tmp_path, monkeypatch, capsys, answers, message):
    root = copy_project(tmp_path / "proj")
    monkeypatch.setattr(pub, "HfApi", RecordingApi)
    typed = iter(answers)
    monkeypatch.setattr(pub.getpass, "getpass", lambda _prompt="": next(typed))
    assert pub.main(["alice/studio", "--secret", "--folder", root]) == 2
    assert [c[0] for c in RecordingApi.calls] == ["whoami"]
    captured = capsys.readouterr()
    assert message in captured.err and SECRET not in captured.out + captured.err


def test_not_logged_in_says_how_to_log_in(tmp_path, monkeypatch, capsys):
    from huggingface_hub.errors import LocalTokenNotFoundError

    class LoggedOut(RecordingApi):
        def whoami(self, *_a, **_k):
            raise LocalTokenNotFoundError("Token is required")

    root = copy_project(tmp_path / "proj")
    monkeypatch.setattr(pub, "HfApi", LoggedOut)
    assert pub.main(["alice/studio", "--folder", root]) == 1
    assert "hf auth login" in capsys.readouterr().err
    assert RecordingApi.calls == []
