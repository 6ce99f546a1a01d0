"""Safe by default, without a server: the bind address (services/exposure.py), who may do what when
strangers can reach the app (services/access.py), and where files that should survive a restart go
(vicreg.core.storage.storage_root, used by the app's settings and the CLI's defaults alike)."""
import logging
import os
import subprocess
import sys

import pytest
from app_fixtures import demo_pair  # noqa: F401

from bench.harness import ROOT
from services import exposure
from services.access import Access
from services.settings import Settings
from vicreg.core import storage
from vicreg.core.config import TrainConfig
from vicreg.core.storage import default_cache_dir, default_checkpoint_dir, default_data_root, storage_root

HOME_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "vicreg")


@pytest.mark.parametrize("env, cli, host", [
    ({}, None, "127.0.0.1"),  # a laptop: loopback only
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, None, "0.0.0.0"),
    ({}, "0.0.0.0", "0.0.0.0"),  # python app.py --host 0.0.0.0
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, "127.0.0.1", "127.0.0.1"),  # --host wins
    ({"SPACE_ID": "you/vicreg-studio"}, None, "0.0.0.0"),  # Spaces require it
    ({"SPACE_ID": "you/vicreg-studio", "GRADIO_SERVER_NAME": "127.0.0.1"}, None, "127.0.0.1"),
    ({"GRADIO_SERVER_NAME": "  "}, " ", "127.0.0.1"),  # blank is unset
])
def test_bind_host(env, cli, host):
    assert exposure.bind_host(env, cli) == host


@pytest.mark.parametrize("host, space, reachable", [
    ("127.0.0.1", False, False), ("127.0.1.1", False, False), ("localhost", False, False), ("::1", False, False),
    ("[::1]", False, False), ("0.0.0.0", False, True), ("::", False, True), ("192.168.1.20", False, True),
    ("myhost.example", False, True), ("", False, True), ("127.0.0.1", True, True),
])
def test_reachable(host, space, reachable):
    assert exposure.reachable(host, space) is reachable


def test_settings_from_env_bind_and_access():
    local = Settings.from_env({})
    assert (local.host, local.reachable, local.access().public, local.access().is_admin("")) == (
        "127.0.0.1", False, False, True)
    space = Settings.from_env({"SPACE_ID": "you/s"})
    assert (space.host, space.reachable, space.access().public, space.access().is_admin("")) == (
        "0.0.0.0", True, True, False)
    lan = Settings.from_env({}, host="0.0.0.0")
    assert lan.reachable and lan.access().public
    opted = Settings.from_env({"SPACE_ID": "you/s", "VICREG_OPEN_ACCESS": "1"}).access()
    assert not opted.public and opted.is_admin("") and opted.admin_only("", "resume training") is None
    secret = Settings.from_env({"VICREG_ADMIN_TOKEN": "s3cret", "VICREG_OPEN_ACCESS": "1"}).access()
    assert secret.public and secret.is_admin("s3cret") and not secret.is_admin("")  # a secret wins over the opt-out
    kept = Settings.from_env({"VICREG_VISITOR_KEEP": "5", "VICREG_VISITOR_MB": "200"})
    assert (kept.visitor_keep, kept.visitor_mb, local.visitor_keep, local.visitor_mb) == (5, 200.0, 3, 1024.0)


def test_no_secret_on_a_reachable_server():
    a = Access(None, reachable=True)
    assert a.public and not a.secret_set and not a.is_admin("") and not a.is_admin("anything")
    refusal = a.admin_only("", "resume training")
    assert refusal.startswith("On this public server only the admin may resume training, and no admin secret is set")
    assert "VICREG_ADMIN_TOKEN" in refusal and "Space" in refusal and "environment variable" in refusal
    assert a.admin_only("guess", "download CIFAR-10").startswith("On this public server only the admin may download")
    assert "no admin secret" in a.wrong_secret("guess") and a.wrong_secret("") is None
    big = a.visitor_run_error(TrainConfig.from_preset("full", epochs=50))
    assert big.startswith("On this shared server a visitor's run may be at most the size of the 10-minute CPU demo")
    assert "VICREG_ADMIN_TOKEN" in big and "enter the admin secret" not in big
    assert a.visitor_run_error(TrainConfig.from_preset("quick_demo")) is None
    assert a.visitor_run_error(TrainConfig.from_preset("long_demo")) is None
    # unchanged where a secret is set, and a private tool on loopback
    s = Access("s3cret", reachable=True)
    assert s.admin_only("", "resume training") == ("On this shared server only the admin may resume training; enter "
                                                   "the admin secret in the 'Admin secret' box at the top of the page.")
    assert s.admin_only("s3cret", "resume training") is None and s.wrong_secret("x") == "Wrong admin secret."
    assert Access(None).admin_only("", "resume training") is None and not Access(None).public


def test_startup_notes():
    assert Access(None, reachable=True, open_access=True).startup_note()[0] == logging.WARNING
    assert "VICREG_OPEN_ACCESS=1" in Access(None, reachable=True, open_access=True).startup_note()[1]
    level, text = Access(None, reachable=True).startup_note()
    assert level == logging.WARNING and "VICREG_ADMIN_TOKEN" in text
    assert Access(None).startup_note() == (logging.INFO,
                                           "listening on loopback only: a private tool, everything allowed")
    assert Access("s", reachable=True).startup_note()[0] == logging.INFO


def test_storage_rule(tmp_path, monkeypatch):
    for var in ("VICREG_STORAGE", "VICREG_DATA", "VICREG_CHECKPOINTS", "VICREG_CACHE", "SPACE_ID"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    monkeypatch.setattr(storage, "SPACE_STORAGE", str(data))  # stands for a Space's /data
    # no storage: the working folder and the user's cache, as before
    assert (storage_root({}), default_checkpoint_dir({}), default_cache_dir({}), default_data_root({})) == (
        None, "checkpoints", HOME_CACHE, "data")
    assert storage_root({"SPACE_ID": "you/s"}) is None  # a Space without persistent storage
    data.mkdir()
    assert storage_root({}) is None  # /data outside a Space is nobody's storage
    space = {"SPACE_ID": "you/s"}
    assert storage_root(space) == str(data)
    assert (default_checkpoint_dir(space), default_cache_dir(space), default_data_root(space)) == (
        str(data / "checkpoints"), str(data / "cache"), str(data / "data"))
    data.chmod(0o500)  # read-only storage is no storage
    try:
        if not os.access(data, os.W_OK):  # (root may write anyway)
            assert storage_root(space) is None
    finally:
        data.chmod(0o700)
    mine = {"VICREG_STORAGE": str(tmp_path / "mine"), "VICREG_CACHE": str(tmp_path / "c"), **space}
    s = Settings.from_env(mine)  # the app: the specific variables win, the rest follow the storage
    assert (s.checkpoint_dir, s.cache_dir, s.data_root) == (
        str(tmp_path / "mine" / "checkpoints"), str(tmp_path / "c"), str(tmp_path / "mine" / "data"))
    monkeypatch.setenv("VICREG_STORAGE", str(tmp_path / "mine"))  # the CLI: TrainConfig's defaults
    assert (TrainConfig().checkpoint_dir, TrainConfig().data, default_cache_dir()) == (
        str(tmp_path / "mine" / "checkpoints"), str(tmp_path / "mine" / "data"), str(tmp_path / "mine" / "cache"))
    monkeypatch.setenv("VICREG_CHECKPOINTS", "elsewhere")
    assert TrainConfig().checkpoint_dir == "elsewhere"


def test_cli_uses_the_storage(tmp_path, demo_pair):  # noqa: F811
    """`python -m vicreg TRAIN` with no --checkpoint_dir saves under VICREG_STORAGE (and --threads 0 works)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VICREG_")}
    env.update(VICREG_STORAGE=str(tmp_path / "storage"), PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "vicreg", "TRAIN", "--data", demo_pair[1], "--epochs", "1", "--batch_size", "16",
           "--train_subset", "32", "--knn_test", "0", "--projector", "64-64", "--threads", "0", "--name", "stored"]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = sorted(os.listdir(tmp_path / "storage" / "checkpoints"))
    assert saved == ["stored.json", "stored.metrics.jsonl", "stored.safetensors"]
    assert not os.path.exists(tmp_path / "checkpoints")
